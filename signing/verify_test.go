package signing

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func TestVerifyHex(t *testing.T) {
	v := mustVerifier(t, "whsec_bmV3LWtleQ==", vectorSecret) // new, old
	body := []byte(vectorBody)
	good := hmacHex(mustKey(t, vectorSecret), body)
	f := func(header string, body []byte, want bool) {
		t.Helper()
		if got := v.VerifyHex([]byte(header), body); got != want {
			t.Fatalf("VerifyHex(%q, %q) = %v, want %v", header, body, got, want)
		}
	}
	f(good, body, true)
	f(hmacHex([]byte("new-key"), body), body, true)                               // either key
	f("sha256="+strings.ToUpper(strings.TrimPrefix(good, "sha256=")), body, true) // hex in upper case
	f(string(mustSigner(t, vectorSecret).AppendHex(nil, body)), body, true)

	tampered := bytes.Clone(body)
	tampered[3] ^= 0x20
	f(good, tampered, false)
	f(good, append(bytes.Clone(body), ' '), false)
	f(good, nil, false)
	f(hmacHex([]byte("some other key"), body), body, false)
	f(hmacHex(mustKey(t, vectorSecret), nil), body, false) // signature of another body

	// Malformed headers.
	f("", body, false)
	f("sha256=", body, false)
	f(strings.TrimPrefix(good, "sha256="), body, false) // no prefix
	f("SHA256="+strings.TrimPrefix(good, "sha256="), body, false)
	f("sha1="+strings.TrimPrefix(good, "sha256="), body, false)
	f(good[:len(good)-1], body, false)
	f(good+"0", body, false)
	f(good+" ", body, false)
	f(" "+good, body, false)
	f(good[:len(good)-1]+"g", body, false)
	f(good[:len(good)-2]+"\xff\xff", body, false)
	f("sha256="+strings.Repeat("0", 64), body, false)
}

func TestVerifyStandard(t *testing.T) {
	const (
		newSecret = "whsec_bmV3LWtleQ=="
		tolerance = 5 * time.Minute
	)
	now := time.Unix(vectorTimestamp, 400_000_000) // mid-second
	v := mustVerifier(t, vectorSecret)
	rotated := mustSigner(t, newSecret, vectorSecret).AppendStandard(nil, []byte(vectorID), vectorTimestamp, []byte(vectorBody))
	ts := strconv.Itoa(vectorTimestamp)

	f := func(id, ts, sig, body string, now time.Time, want error) {
		t.Helper()
		got := v.VerifyStandard([]byte(id), []byte(ts), []byte(sig), []byte(body), now, tolerance)
		if got != want {
			t.Fatalf("VerifyStandard(%q, %q, %q, %q, %v) = %v, want %v", id, ts, sig, body, now.Unix(), got, want)
		}
	}
	f(vectorID, ts, vectorSignature, vectorBody, now, nil)
	// Rotation: the verifier holds only the previous key; its entry comes second.
	f(vectorID, ts, string(rotated), vectorBody, now, nil)
	// Other entries, other versions, extra spaces are skipped.
	f(vectorID, ts, "v1,bm9wZQ== v1a,xyz "+vectorSignature, vectorBody, now, nil)
	f(vectorID, ts, "v2,abc  "+vectorSignature+" ", vectorBody, now, nil)
	// Leading zeros do not change the signed value (as in the official verifiers).
	f(vectorID, "0"+ts, vectorSignature, vectorBody, now, nil)

	// Tolerance, both ways, to the second.
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(vectorTimestamp, 0).Add(tolerance), nil)
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(vectorTimestamp, 0).Add(-tolerance), nil)
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(vectorTimestamp, 1).Add(tolerance), ErrTimestampOutOfRange)
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(vectorTimestamp, -1).Add(-tolerance), ErrTimestampOutOfRange)
	f(vectorID, ts, vectorSignature, vectorBody, time.Now(), ErrTimestampOutOfRange) // stale replay
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(0, 0), ErrTimestampOutOfRange)
	f(vectorID, "9223372036854775807", vectorSignature, vectorBody, now, ErrTimestampOutOfRange)
	f(vectorID, "1099511627777", vectorSignature, vectorBody, now, ErrTimestampOutOfRange)
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(1<<62, 0), ErrTimestampOutOfRange)
	f(vectorID, ts, vectorSignature, vectorBody, time.Unix(-1<<62, 0), ErrTimestampOutOfRange)

	// Tampered body, id, timestamp; wrong key.
	f(vectorID, ts, vectorSignature, `{"test": 2432232315}`, now, ErrMismatch)
	f(vectorID, ts, vectorSignature, vectorBody+" ", now, ErrMismatch)
	f(vectorID, ts, vectorSignature, "", now, ErrMismatch)
	f(vectorID+"x", ts, vectorSignature, vectorBody, now, ErrMismatch)
	f(vectorID, strconv.Itoa(vectorTimestamp+1), vectorSignature, vectorBody, now, ErrMismatch)
	wrongKey := mustSigner(t, newSecret).AppendStandard(nil, []byte(vectorID), vectorTimestamp, []byte(vectorBody))
	f(vectorID, ts, string(wrongKey), vectorBody, now, ErrMismatch)

	// Malformed signature headers.
	f(vectorID, ts, "", vectorBody, now, ErrNoSignature)
	f(vectorID, ts, " ", vectorBody, now, ErrNoSignature)
	f(vectorID, ts, "v2,"+strings.TrimPrefix(vectorSignature, "v1,"), vectorBody, now, ErrNoSignature)
	f(vectorID, ts, strings.TrimPrefix(vectorSignature, "v1,"), vectorBody, now, ErrNoSignature)
	f(vectorID, ts, "V1,"+strings.TrimPrefix(vectorSignature, "v1,"), vectorBody, now, ErrNoSignature)
	f(vectorID, ts, "v1", vectorBody, now, ErrNoSignature)
	f(vectorID, ts, "v1,", vectorBody, now, ErrMismatch)
	f(vectorID, ts, "v1,!!!", vectorBody, now, ErrMismatch)
	f(vectorID, ts, vectorSignature+"=", vectorBody, now, ErrMismatch)
	f(vectorID, ts, vectorSignature[:len(vectorSignature)-1], vectorBody, now, ErrMismatch)
	f(vectorID, ts, strings.TrimSuffix(vectorSignature, "=")+"", vectorBody, now, ErrMismatch)
	f(vectorID, ts, "v1,"+strings.TrimPrefix(vectorSignature, "v1,")+"\t", vectorBody, now, ErrMismatch)
	f(vectorID, ts, strings.Replace(vectorSignature, "g0h", "G0h", 1), vectorBody, now, ErrMismatch)
	// Non-canonical base64 of the same bytes (other unused bits in the last
	// character) is refused, as the official verifiers refuse it.
	f(vectorID, ts, strings.Replace(vectorSignature, "1OE=", "1OF=", 1), vectorBody, now, ErrMismatch)

	// Missing id, malformed timestamps.
	f("", ts, vectorSignature, vectorBody, now, ErrNoID)
	f(vectorID, "", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "+"+ts, vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "-"+ts, vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, " "+ts, vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, ts+" ", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, ts+".5", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "1.6e9", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "0x60379c72", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "9223372036854775808", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "99999999999999999999999", vectorSignature, vectorBody, now, ErrBadTimestamp)
	f(vectorID, "2021-02-25T15:42:10Z", vectorSignature, vectorBody, now, ErrBadTimestamp)

	// A negative tolerance refuses everything; zero only the exact second.
	if err := v.VerifyStandard([]byte(vectorID), []byte(ts), []byte(vectorSignature), []byte(vectorBody), time.Unix(vectorTimestamp, 0), -time.Second); err != ErrTimestampOutOfRange {
		t.Fatalf("negative tolerance: %v", err)
	}
	if err := v.VerifyStandard([]byte(vectorID), []byte(ts), []byte(vectorSignature), []byte(vectorBody), time.Unix(vectorTimestamp, 0), 0); err != nil {
		t.Fatalf("zero tolerance, same second: %v", err)
	}

	// Errors say what failed and hold no secret.
	for _, err := range []error{ErrNoSignature, ErrNoID, ErrBadTimestamp, ErrTimestampOutOfRange, ErrMismatch} {
		if strings.Contains(err.Error(), "MfKQ9r8G") {
			t.Fatalf("error %q holds the secret", err)
		}
	}
}

// TestVerifyStandardOfficialSigner checks the other direction: what the
// official library signs, Verifier accepts.
func TestVerifyStandardOfficialSigner(t *testing.T) {
	wh, err := standardwebhooks.NewWebhook(vectorSecret)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	v := mustVerifier(t, vectorSecret)
	now := time.Now()
	body := []byte(`{"batch": true}`)
	sig, err := wh.Sign("b_1", now, body)
	if err != nil {
		t.Fatalf("official Sign: %v", err)
	}
	err = v.VerifyStandard([]byte("b_1"), strconv.AppendInt(nil, now.Unix(), 10), []byte(sig), body, now, time.Minute)
	if err != nil {
		t.Fatalf("VerifyStandard of an official signature: %v", err)
	}
}

func TestVerifyStandardErrorsAreSentinels(t *testing.T) {
	v := mustVerifier(t, vectorSecret)
	err := v.VerifyStandard([]byte("id"), []byte("1"), []byte("v1,x"), nil, time.Unix(1, 0), time.Second)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
}

func BenchmarkVerifyHex(b *testing.B) {
	v := mustVerifier(b, vectorSecret)
	sig := mustSigner(b, vectorSecret).AppendHex(nil, benchBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		if !v.VerifyHex(sig, benchBody) {
			b.Fatal("VerifyHex refused")
		}
	}
}

func BenchmarkVerifyStandard(b *testing.B) {
	v := mustVerifier(b, vectorSecret)
	id := []byte("b_01JABCDEFGHJKMNPQRSTVWXYZ")
	now := time.Unix(vectorTimestamp, 0)
	ts := []byte(strconv.Itoa(vectorTimestamp))
	sig := mustSigner(b, vectorSecret).AppendStandard(nil, id, vectorTimestamp, benchBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		if err := v.VerifyStandard(id, ts, sig, benchBody, now, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
