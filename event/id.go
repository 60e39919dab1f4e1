package event

import (
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"
)

// IDLen is the length of an id that AppendID appends after its prefix.
const IDLen = 26

// crockford is Crockford's base32 alphabet; its byte order is its value
// order, so ids compare as strings in the order of their values.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

const maxIDMillis = 1<<48 - 1

// ids is the process-wide id source behind AppendID.
var ids = newIDSource()

// idSource issues ids; the last one issued is (ms, hi, lo) and every new one
// is greater than it.
type idSource struct {
	mu  sync.Mutex
	rng *rand.ChaCha8
	ms  uint64 // Unix milliseconds of the last id
	hi  uint64 // top 16 of its 80 random bits
	lo  uint64 // low 64 of its 80 random bits
}

func newIDSource() *idSource {
	var seed [32]byte
	crand.Read(seed[:]) // never fails; it crashes the program instead
	return &idSource{rng: rand.NewChaCha8(seed)}
}

// AppendID appends prefix and a 26-character sortable unique id (ULID layout: 48-bit
// Unix milliseconds then 80 random bits, Crockford base32, uppercase) to dst.
// Ids from one process are strictly increasing, even within one millisecond.
//
// Within one millisecond, and when now is earlier than the last id's time
// (the clock stepped back), the id keeps the last id's time and its random
// part is the last one plus a random step (1 to 2^32), so that the next id
// cannot be guessed from the last one. AppendID is safe for concurrent use.
func AppendID(dst []byte, prefix string, now time.Time) []byte {
	return ids.append(dst, prefix, now)
}

func (s *idSource) append(dst []byte, prefix string, now time.Time) []byte {
	ms := now.UnixMilli()
	switch {
	case ms < 0:
		ms = 0
	case ms > maxIDMillis:
		ms = maxIDMillis
	}

	s.mu.Lock()
	if uint64(ms) > s.ms {
		s.ms = uint64(ms)
		s.hi = s.rng.Uint64() & 0xffff
		s.lo = s.rng.Uint64()
	} else {
		step := s.rng.Uint64()>>32 + 1
		s.lo += step
		if s.lo < step { // carried
			s.hi = (s.hi + 1) & 0xffff
			if s.hi == 0 {
				// 2^80 ids in one millisecond: borrow the next one.
				s.ms++
			}
		}
	}
	hi, lo := s.ms<<16|s.hi, s.lo
	s.mu.Unlock()

	dst = append(dst, prefix...)
	var out [IDLen]byte
	// 26 digits of 5 bits hold 130 bits; the top two are zero.
	for k := IDLen - 1; k >= 0; k-- {
		out[k] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return append(dst, out[:]...)
}
