// Package signing signs delivered batches and verifies signatures with
// HMAC-SHA256, in the two schemes of DESIGN §6:
//
//	X-Webhook-Signature: sha256=<lowercase hex HMAC-SHA256(key, body)>
//	webhook-signature:   v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")> ...
//
// The second is Standard Webhooks; its signatures verify with the official
// Standard Webhooks and Svix libraries. Keys come from secrets by the rule of
// DecodeSecret. Nothing in this package puts a secret or a key into an error.
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

// secretPrefix marks a Standard Webhooks secret: the rest is the key in
// standard base64.
const secretPrefix = "whsec_"

// DecodeSecret returns the HMAC key for secret: the standard-base64-decoded
// part after a "whsec_" prefix, or the secret's own bytes when it has no such
// prefix. An empty key is an error. Errors never contain the secret.
func DecodeSecret(secret string) ([]byte, error) {
	tail, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		if secret == "" {
			return nil, errors.New("secret is empty")
		}
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(tail)
	if err != nil {
		// Build the message here rather than wrap err, so that it provably
		// holds no part of the secret.
		var cie base64.CorruptInputError
		if errors.As(err, &cie) {
			return nil, fmt.Errorf("%s secret is not valid standard base64 (at byte %d after the prefix)", secretPrefix, int64(cie))
		}
		return nil, fmt.Errorf("%s secret is not valid standard base64", secretPrefix)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%s secret holds an empty key", secretPrefix)
	}
	return key, nil
}

// key is one HMAC-SHA256 key with a pool of keyed hash states, so that a MAC
// costs no allocation and no re-hashing of the padded key. Safe for
// concurrent use.
type key struct {
	pool sync.Pool // of *macState, each Reset (ready for the first Write)
}

// macState is a keyed HMAC state with scratch space, so that nothing handed
// to the hash.Hash interface has to be allocated per call.
type macState struct {
	h       hash.Hash
	scratch [24]byte // ".<timestamp>." of the Standard Webhooks message
	sum     [sha256.Size]byte
}

func newKey(k []byte) *key {
	k = append([]byte(nil), k...)
	kk := &key{}
	kk.pool.New = func() any { return &macState{h: hmac.New(sha256.New, k)} }
	return kk
}

// sumBody returns HMAC-SHA256(key, body).
func (k *key) sumBody(body []byte) [sha256.Size]byte {
	st := k.pool.Get().(*macState)
	st.h.Write(body)
	return k.finish(st)
}

// sumStandard returns HMAC-SHA256(key, "<id>.<ts>.<body>"), ts in decimal.
func (k *key) sumStandard(id []byte, ts int64, body []byte) [sha256.Size]byte {
	st := k.pool.Get().(*macState)
	st.h.Write(id)
	b := append(st.scratch[:0], '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	st.h.Write(b)
	st.h.Write(body)
	return k.finish(st)
}

// finish returns the MAC of what was written to st and gives st back to the
// pool, reset.
func (k *key) finish(st *macState) [sha256.Size]byte {
	st.h.Sum(st.sum[:0])
	sum := st.sum
	st.h.Reset()
	k.pool.Put(st)
	return sum
}

// newKeys decodes secrets into keys; what names each secret in errors.
func newKeys(secrets []string, what func(i int) string) ([]*key, error) {
	keys := make([]*key, 0, len(secrets))
	for i, s := range secrets {
		k, err := DecodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("invalid %s: %w", what(i), err)
		}
		keys = append(keys, newKey(k))
	}
	return keys, nil
}
