//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation
// counts hold only without it.

package signing

import (
	"strconv"
	"testing"
	"time"
)

func TestAllocations(t *testing.T) {
	s := mustSigner(t, vectorSecret, "previous-secret")
	v := mustVerifier(t, "whsec_bmV3LWtleQ==", vectorSecret)
	id := []byte("b_01JABCDEFGHJKMNPQRSTVWXYZ")
	now := time.Unix(vectorTimestamp, 0)
	ts := strconv.AppendInt(nil, vectorTimestamp, 10)
	hexSig := s.AppendHex(nil, benchBody)
	stdSig := s.AppendStandard(nil, id, vectorTimestamp, benchBody)
	dst := make([]byte, 0, 256)

	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Fatalf("%s: %v allocations per run, want 0", name, n)
		}
	}
	f("AppendHex", func() { dst = s.AppendHex(dst[:0], benchBody) })
	f("AppendStandard", func() { dst = s.AppendStandard(dst[:0], id, vectorTimestamp, benchBody) })
	f("VerifyHex", func() {
		if !v.VerifyHex(hexSig, benchBody) {
			t.Fatal("VerifyHex refused")
		}
	})
	f("VerifyStandard", func() {
		if err := v.VerifyStandard(id, ts, stdSig, benchBody, now, time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	f("VerifyStandard mismatch", func() {
		if err := v.VerifyStandard(id, ts, stdSig, benchBody[1:], now, time.Minute); err != ErrMismatch {
			t.Fatal(err)
		}
	})
}
