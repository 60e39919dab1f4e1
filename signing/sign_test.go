package signing

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The test vector of the Standard Webhooks specification and libraries.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSigner(t testing.TB, secret string, previous ...string) *Signer {
	t.Helper()
	s, err := NewSigner(secret, previous)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

func mustVerifier(t testing.TB, secrets ...string) *Verifier {
	t.Helper()
	v, err := NewVerifier(secrets...)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func TestAppendStandardVector(t *testing.T) {
	s := mustSigner(t, vectorSecret)
	got := s.AppendStandard(nil, []byte(vectorID), vectorTimestamp, []byte(vectorBody))
	if string(got) != vectorSignature {
		t.Fatalf("AppendStandard = %q, want %q", got, vectorSignature)
	}
	// Appends, leaving dst's contents alone.
	got = s.AppendStandard([]byte("x: "), []byte(vectorID), vectorTimestamp, []byte(vectorBody))
	if string(got) != "x: "+vectorSignature {
		t.Fatalf("AppendStandard to a prefix = %q", got)
	}
}

// standardHeaders are the three Standard Webhooks headers as a receiver sees
// them.
func standardHeaders(id string, ts int64, sig []byte) http.Header {
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, string(sig))
	return h
}

func officialWebhook(t *testing.T, secret string) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("standardwebhooks.NewWebhook: %v", err)
	}
	return wh
}

func TestAppendStandardOfficialVerifier(t *testing.T) {
	const (
		oldSecret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		newSecret   = "whsec_c2VjcmV0LWtleS1yb3RhdGVkLWluLTIwMjYtISE="
		otherSecret = "whsec_dW5yZWxhdGVkLXNlY3JldA=="
	)
	s := mustSigner(t, newSecret, oldSecret)
	id := "b_01JABCDEF"
	body := []byte(`{"batch": true, "batch_id": "b_01JABCDEF", "count": 1, "events": [{"data": "é\u00e9\n"}]}`)
	ts := time.Now().Unix()
	sig := s.AppendStandard(nil, []byte(id), ts, body)

	entries := strings.Split(string(sig), " ")
	if len(entries) != 2 || !strings.HasPrefix(entries[0], "v1,") || !strings.HasPrefix(entries[1], "v1,") {
		t.Fatalf("AppendStandard with one previous key = %q, want two v1 entries", sig)
	}
	newOnly := mustSigner(t, newSecret).AppendStandard(nil, []byte(id), ts, body)
	if entries[0] != string(newOnly) {
		t.Fatalf("first entry %q is not the current key's %q", entries[0], newOnly)
	}

	// A receiver holding either key verifies, during the rotation window.
	for _, secret := range []string{newSecret, oldSecret} {
		wh := officialWebhook(t, secret)
		if err := wh.Verify(body, standardHeaders(id, ts, sig)); err != nil {
			t.Fatalf("official Verify with one of the keys: %v", err)
		}
	}
	// One holding neither does not.
	wh := officialWebhook(t, otherSecret)
	if err := wh.Verify(body, standardHeaders(id, ts, sig)); err == nil {
		t.Fatal("official Verify accepted a signature with an unrelated key")
	}
	// Nor does a tampered body, id or timestamp pass.
	wh = officialWebhook(t, newSecret)
	tampered := bytes.Clone(body)
	tampered[len(tampered)-2] ^= 1
	if err := wh.Verify(tampered, standardHeaders(id, ts, sig)); err == nil {
		t.Fatal("official Verify accepted a tampered body")
	}
	if err := wh.Verify(body, standardHeaders(id+"x", ts, sig)); err == nil {
		t.Fatal("official Verify accepted another id")
	}
	if err := wh.Verify(body, standardHeaders(id, ts+1, sig)); err == nil {
		t.Fatal("official Verify accepted another timestamp")
	}

	// The fixed vector, timestamp aside: old, so Verify would refuse it.
	vec := mustSigner(t, vectorSecret).AppendStandard(nil, []byte(vectorID), vectorTimestamp, []byte(vectorBody))
	h := standardHeaders(vectorID, vectorTimestamp, vec)
	if err := officialWebhook(t, vectorSecret).VerifyIgnoringTimestamp([]byte(vectorBody), h); err != nil {
		t.Fatalf("official VerifyIgnoringTimestamp of the vector: %v", err)
	}
	if err := officialWebhook(t, vectorSecret).Verify([]byte(vectorBody), h); err == nil {
		t.Fatal("official Verify accepted a 2021 timestamp")
	}
}

func TestAppendStandardRawSecret(t *testing.T) {
	// Without the whsec_ prefix the key is the secret's bytes; the official
	// library spells that NewWebhookRaw (its NewWebhook would base64-decode).
	const secret = "a raw secret, not base64 at all"
	id, ts, body := "msg_1", time.Now().Unix(), []byte(`{"a":1}`)
	sig := mustSigner(t, secret).AppendStandard(nil, []byte(id), ts, body)
	wh, err := standardwebhooks.NewWebhookRaw([]byte(secret))
	if err != nil {
		t.Fatalf("NewWebhookRaw: %v", err)
	}
	if err := wh.Verify(body, standardHeaders(id, ts, sig)); err != nil {
		t.Fatalf("official Verify with the raw key: %v", err)
	}
	want, err := wh.Sign(id, time.Unix(ts, 0), body)
	if err != nil {
		t.Fatalf("official Sign: %v", err)
	}
	if string(sig) != want {
		t.Fatalf("AppendStandard = %q, official Sign = %q", sig, want)
	}
}

func TestAppendStandardMatchesOfficialSign(t *testing.T) {
	s := mustSigner(t, vectorSecret)
	wh := officialWebhook(t, vectorSecret)
	f := func(id string, ts int64, body string) {
		t.Helper()
		want, err := wh.Sign(id, time.Unix(ts, 0), []byte(body))
		if err != nil {
			t.Fatalf("official Sign: %v", err)
		}
		if got := s.AppendStandard(nil, []byte(id), ts, []byte(body)); string(got) != want {
			t.Fatalf("AppendStandard(%q, %d, %q) = %q, official Sign = %q", id, ts, body, got, want)
		}
	}
	f(vectorID, vectorTimestamp, vectorBody)
	f("x", 0, "")
	f("id.with.dots", 1, "body.with.dots")
	f("b_1", 9999999999, strings.Repeat("z", 100_000))
	f("b_2", -5, "{}") // negative: still signed as the official library does
}

// hmacHex is the hex scheme computed independently of the package.
func hmacHex(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestAppendHex(t *testing.T) {
	f := func(secret string, key []byte, body string) {
		t.Helper()
		s := mustSigner(t, secret, "whsec_cHJldmlvdXM=") // previous keys play no part
		want := hmacHex(key, []byte(body))
		got := s.AppendHex(nil, []byte(body))
		if string(got) != want {
			t.Fatalf("AppendHex(%q) = %q, want %q", body, got, want)
		}
		got = s.AppendHex([]byte("X-Webhook-Signature: "), []byte(body))
		if string(got) != "X-Webhook-Signature: "+want {
			t.Fatalf("AppendHex to a prefix = %q", got)
		}
		// Reused states give the same answer again.
		if got := s.AppendHex(nil, []byte(body)); string(got) != want {
			t.Fatalf("second AppendHex(%q) = %q, want %q", body, got, want)
		}
	}
	vectorKey, _ := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f(vectorSecret, vectorKey, vectorBody)
	f(vectorSecret, vectorKey, "")
	f("raw-secret", []byte("raw-secret"), `{"batch":true}`)
	f(strings.Repeat("k", 200), []byte(strings.Repeat("k", 200)), "key longer than a block")
	f("whsec_"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 64)), bytes.Repeat([]byte{0xff}, 64), strings.Repeat("b", 70_000))
}

func TestSignerConcurrent(t *testing.T) {
	s := mustSigner(t, vectorSecret, "old-secret")
	v := mustVerifier(t, "old-secret")
	key := mustKey(t, vectorSecret)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			var dst []byte
			for i := range 200 {
				body := []byte(strconv.Itoa(g*1000 + i))
				dst = s.AppendHex(dst[:0], body)
				if string(dst) != hmacHex(key, body) {
					t.Errorf("concurrent AppendHex(%q) = %q", body, dst)
					return
				}
				dst = s.AppendStandard(dst[:0], body, 1614265330, body)
				if err := v.VerifyStandard(body, []byte("1614265330"), dst, body, time.Unix(1614265330, 0), 0); err != nil {
					t.Errorf("concurrent VerifyStandard(%q): %v", body, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func mustKey(t testing.TB, secret string) []byte {
	t.Helper()
	k, err := DecodeSecret(secret)
	if err != nil {
		t.Fatalf("DecodeSecret: %v", err)
	}
	return k
}

// benchBody is a 30 KB batch-like body.
var benchBody = func() []byte {
	b := []byte(`{"batch": true, "batch_id": "b_01JABCDEF", "subscriber": "orders", "events": [`)
	for len(b) < 30*1024-64 {
		b = append(b, `{"id":"evt_1","type":"order.created","data":{"sku":"A-1","qty":3}},`...)
	}
	b = append(b[:len(b)-1], "]}"...)
	for len(b) < 30*1024 {
		b = append(b, ' ')
	}
	return b
}()

func BenchmarkAppendHex(b *testing.B) {
	s := mustSigner(b, vectorSecret)
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		dst = s.AppendHex(dst[:0], benchBody)
	}
}

func BenchmarkAppendStandard(b *testing.B) {
	f := func(name string, previous ...string) {
		b.Run(name, func(b *testing.B) {
			s := mustSigner(b, vectorSecret, previous...)
			id := []byte("b_01JABCDEFGHJKMNPQRSTVWXYZ")
			dst := make([]byte, 0, 256)
			b.ReportAllocs()
			b.SetBytes(int64(len(benchBody)))
			for b.Loop() {
				dst = s.AppendStandard(dst[:0], id, 1614265330, benchBody)
			}
		})
	}
	f("keys=1")
	f("keys=2", "whsec_cHJldmlvdXM=")
}

func BenchmarkAppendHexParallel(b *testing.B) {
	s := mustSigner(b, vectorSecret)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 128)
		for pb.Next() {
			dst = s.AppendHex(dst[:0], benchBody)
		}
	})
}
