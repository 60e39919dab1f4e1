package signing

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"time"
)

const (
	hexPrefix      = "sha256="
	standardPrefix = "v1,"
)

// Errors of VerifyStandard, saying which check failed. None of them holds a
// secret or a signature.
var (
	// ErrNoSignature: the signature header holds no v1 entry.
	ErrNoSignature = errors.New("signing: no v1 signature")
	// ErrNoID: the webhook-id is empty.
	ErrNoID = errors.New("signing: empty webhook-id")
	// ErrBadTimestamp: the timestamp is not unix seconds in decimal digits.
	ErrBadTimestamp = errors.New("signing: webhook-timestamp is not unix seconds")
	// ErrTimestampOutOfRange: the timestamp is further from now than the
	// tolerance, so the message may be a replay.
	ErrTimestampOutOfRange = errors.New("signing: webhook-timestamp outside tolerance")
	// ErrMismatch: no v1 entry matches any key.
	ErrMismatch = errors.New("signing: signature mismatch")
)

// Verifier checks signatures against one or more keys; MACs are compared in
// constant time. It is immutable once made and safe for concurrent use; its
// Verify methods do not allocate.
type Verifier struct {
	keys []*key
}

// NewVerifier returns a Verifier accepting a signature made with any of
// secrets (several during a key rotation). Keys follow DecodeSecret; errors
// name which secret is invalid but never contain it.
func NewVerifier(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no secret to verify with")
	}
	keys, err := newKeys(secrets, func(i int) string { return "secret #" + strconv.Itoa(i) })
	if err != nil {
		return nil, err
	}
	return &Verifier{keys: keys}, nil
}

// VerifyHex reports whether header is "sha256=<hex HMAC-SHA256(key, body)>"
// for any key. The hex may be in either case; the prefix is exact and nothing
// may surround the value.
func (v *Verifier) VerifyHex(header, body []byte) bool {
	h, ok := bytes.CutPrefix(header, []byte(hexPrefix))
	if !ok || len(h) != hex.EncodedLen(sha256.Size) {
		return false
	}
	var got [sha256.Size]byte
	if _, err := hex.Decode(got[:], h); err != nil {
		return false
	}
	for _, k := range v.keys {
		want := k.sumBody(body)
		if hmac.Equal(got[:], want[:]) {
			return true
		}
	}
	return false
}

// VerifyStandard checks the Standard Webhooks headers webhook-id (id),
// webhook-timestamp (ts, unix seconds in decimal digits) and
// webhook-signature (sigHeader, space-separated entries; those other than v1
// are ignored) against body. It returns nil when some v1 entry matches some
// key and ts is within tolerance of now either way (so replays outside it are
// refused; a negative tolerance refuses every timestamp). Otherwise it returns
// ErrNoSignature, ErrNoID, ErrBadTimestamp, ErrTimestampOutOfRange or
// ErrMismatch, checked in that order.
//
// As in the official verifiers, the MAC covers ts as re-formatted from its
// value, so leading zeros in the header do not change it.
func (v *Verifier) VerifyStandard(id, ts, sigHeader, body []byte, now time.Time, tolerance time.Duration) error {
	if !hasStandardEntry(sigHeader) {
		return ErrNoSignature
	}
	if len(id) == 0 {
		return ErrNoID
	}
	t, ok := parseTimestamp(ts)
	if !ok {
		return ErrBadTimestamp
	}
	if !withinTolerance(t, now, tolerance) {
		return ErrTimestampOutOfRange
	}
	var buf [len(standardPrefix) + (sha256.Size+2)/3*4]byte
	for _, k := range v.keys {
		sum := k.sumStandard(id, t, body)
		want := base64.StdEncoding.AppendEncode(append(buf[:0], standardPrefix...), sum[:])
		for rest := sigHeader; len(rest) > 0; {
			var entry []byte
			entry, rest, _ = bytes.Cut(rest, []byte{' '})
			// Comparing whole entries, prefix included, as the official
			// verifiers do: one canonical encoding matches, nothing else.
			if hmac.Equal(entry, want) {
				return nil
			}
		}
	}
	return ErrMismatch
}

// hasStandardEntry reports whether the space-separated sigHeader has an
// entry of version v1.
func hasStandardEntry(sigHeader []byte) bool {
	for rest := sigHeader; len(rest) > 0; {
		var entry []byte
		entry, rest, _ = bytes.Cut(rest, []byte{' '})
		if bytes.HasPrefix(entry, []byte(standardPrefix)) {
			return true
		}
	}
	return false
}

// parseTimestamp parses unix seconds written as decimal digits only (no sign,
// no spaces), as sent in webhook-timestamp.
func parseTimestamp(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// maxTimestamp bounds the timestamps compared exactly: beyond it (year
// ~36800) a timestamp is out of range for any tolerance a Duration can hold,
// and below it time.Unix cannot overflow.
const maxTimestamp = 1 << 40

// withinTolerance reports whether unix time ts is at most tolerance before or
// after now.
func withinTolerance(ts int64, now time.Time, tolerance time.Duration) bool {
	if tolerance < 0 || ts > maxTimestamp {
		return false
	}
	d := now.Sub(time.Unix(ts, 0)) // saturates instead of overflowing
	return d <= tolerance && d >= -tolerance
}
