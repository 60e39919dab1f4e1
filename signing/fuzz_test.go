package signing

import (
	"bytes"
	"strconv"
	"testing"
	"time"
)

// FuzzVerifyStandard checks that VerifyStandard never panics on any headers,
// accepts only a signature equal to one an owner of the key makes, and
// accepts every signature Signer makes.
func FuzzVerifyStandard(f *testing.F) {
	const tolerance = 5 * time.Minute
	f.Add([]byte(vectorID), []byte("1614265330"), []byte(vectorSignature), []byte(vectorBody))
	f.Add([]byte(vectorID), []byte("01614265330"), []byte("v1a,x v1,"+vectorSignature[3:]+" v2,y"), []byte(vectorBody))
	f.Add([]byte("b_1"), []byte("1614265330"), []byte("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="), []byte(`{"batch": true}`))
	f.Add([]byte(""), []byte(""), []byte(""), []byte(""))
	f.Add([]byte("x"), []byte("-1"), []byte("v1"), []byte{0})
	f.Add([]byte("x"), []byte("99999999999999999999"), []byte("  v1,  "), []byte("\xff"))
	f.Add([]byte("msg 1"), []byte("1614265631"), []byte("v1,!!!! v1,===="), []byte("{}"))

	s := mustSigner(f, vectorSecret, "previous-raw-secret")
	cur := mustSigner(f, vectorSecret)
	v := mustVerifier(f, vectorSecret)
	vPrev := mustVerifier(f, "previous-raw-secret")
	now := time.Unix(vectorTimestamp, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig, body []byte) {
		err := v.VerifyStandard(id, ts, sig, body, now, tolerance)
		if err == nil {
			// Accepted: the timestamp parses, is in range, and some entry
			// is exactly the current key's signature.
			n, perr := strconv.ParseInt(string(ts), 10, 64)
			if perr != nil || ts[0] == '+' || ts[0] == '-' {
				t.Fatalf("accepted timestamp %q", ts)
			}
			if d := n - now.Unix(); d > 300 || d < -300 {
				t.Fatalf("accepted timestamp %q outside tolerance", ts)
			}
			want := cur.AppendStandard(nil, id, n, body)
			if !bytes.Contains(append(append([]byte{' '}, sig...), ' '), append(append([]byte{' '}, want...), ' ')) {
				t.Fatalf("accepted %q, which does not hold %q", sig, want)
			}
		}

		// Round trip with the fuzzed id and body (an empty id is refused
		// by design; the timestamp is set from the body to vary it).
		if len(id) == 0 {
			return
		}
		tsn := vectorTimestamp + int64(len(body))%600 - 300
		own := s.AppendStandard(nil, id, tsn, body)
		tsText := strconv.AppendInt(nil, tsn, 10)
		for _, v := range []*Verifier{v, vPrev} {
			if err := v.VerifyStandard(id, tsText, own, body, now, tolerance); err != nil {
				t.Fatalf("VerifyStandard(%q, %s, %q) of Signer's own signature: %v", id, tsText, own, err)
			}
		}
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[len(tampered)/2] ^= 1
			if err := v.VerifyStandard(id, tsText, own, tampered, now, tolerance); err != ErrMismatch {
				t.Fatalf("VerifyStandard of a tampered body: %v, want ErrMismatch", err)
			}
		}
	})
}

// FuzzVerifyHex checks that VerifyHex never panics, accepts only the
// signature of the key (in either case of hex) and accepts every signature
// Signer makes.
func FuzzVerifyHex(f *testing.F) {
	f.Add([]byte(hmacHex(mustKey(f, vectorSecret), []byte(vectorBody))), []byte(vectorBody))
	f.Add([]byte("sha256=CC1A8F7F6DA3C2A5BB8A4C6C66BDE3D58A83B0A18D7D7A43B5B8F7CE7AC6E1D2"), []byte(`{"batch": true}`))
	f.Add([]byte("sha256="), []byte(""))
	f.Add([]byte(""), []byte("x"))
	f.Add([]byte("sha256=zz"), []byte{0xff, 0})
	f.Add([]byte("sha1=0123456789abcdef0123456789abcdef01234567"), []byte("{}"))

	s := mustSigner(f, vectorSecret)
	v := mustVerifier(f, "other-key", vectorSecret)
	key := mustKey(f, vectorSecret)
	f.Fuzz(func(t *testing.T, header, body []byte) {
		if v.VerifyHex(header, body) {
			// Accepted: exactly the prefix, then the MAC of one of the keys
			// in hex of either case.
			lower := "sha256=" + string(bytes.ToLower(bytes.TrimPrefix(header, []byte("sha256="))))
			if !bytes.HasPrefix(header, []byte("sha256=")) ||
				(lower != hmacHex(key, body) && lower != hmacHex([]byte("other-key"), body)) {
				t.Fatalf("accepted %q", header)
			}
		}

		own := s.AppendHex(nil, body)
		if string(own) != hmacHex(key, body) {
			t.Fatalf("AppendHex(%q) = %q, want %q", body, own, hmacHex(key, body))
		}
		if !v.VerifyHex(own, body) {
			t.Fatalf("VerifyHex(%q) of Signer's own signature refused", own)
		}
		if v.VerifyHex(own[len("sha256="):], body) {
			t.Fatalf("VerifyHex accepted a signature without its prefix")
		}
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[0] ^= 0x80
			if v.VerifyHex(own, tampered) {
				t.Fatalf("VerifyHex accepted a tampered body")
			}
		}
	})
}
