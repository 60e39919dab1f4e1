package signing

import (
	"encoding/base64"
	"encoding/hex"
	"strconv"
)

// Signer signs with a current key and any previous keys (rotation). It is
// immutable once made and safe for concurrent use; its Append methods do not
// allocate when dst has room.
type Signer struct {
	keys []*key // current first, then previous ones in the order given
}

// NewSigner returns a Signer for secret and, during a key rotation, the
// previous secrets still signed with. Keys follow DecodeSecret; errors name
// which secret is invalid but never contain it.
func NewSigner(secret string, previous []string) (*Signer, error) {
	secrets := make([]string, 0, 1+len(previous))
	secrets = append(secrets, secret)
	secrets = append(secrets, previous...)
	keys, err := newKeys(secrets, func(i int) string {
		if i == 0 {
			return "secret"
		}
		return "previous secret #" + strconv.Itoa(i-1)
	})
	if err != nil {
		return nil, err
	}
	return &Signer{keys: keys}, nil
}

// AppendHex appends "sha256=<lowercase hex HMAC-SHA256(key, body)>" to dst,
// with the current key only, and returns the extended slice.
func (s *Signer) AppendHex(dst, body []byte) []byte {
	sum := s.keys[0].sumBody(body)
	dst = append(dst, hexPrefix...)
	return hex.AppendEncode(dst, sum[:])
}

// AppendStandard appends the Standard Webhooks webhook-signature header value
// for message id, unix time ts and body to dst and returns the extended
// slice: "v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>" for each key,
// current first, separated by single spaces.
func (s *Signer) AppendStandard(dst, id []byte, ts int64, body []byte) []byte {
	for i, k := range s.keys {
		if i > 0 {
			dst = append(dst, ' ')
		}
		sum := k.sumStandard(id, ts, body)
		dst = append(dst, standardPrefix...)
		dst = base64.StdEncoding.AppendEncode(dst, sum[:])
	}
	return dst
}
