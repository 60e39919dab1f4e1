package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Batch is a formed batch: its identity and contents never change once it is
// stored; only the delivery state (attempts, times, last outcome) does.
type Batch struct {
	ID         string
	Subscriber string
	Seqs       []uint64 // event sequence numbers, in queue order

	Created      int64 // unix nanos when the batch was formed, or last replayed
	Attempts     int
	FirstAttempt int64 // unix nanos, 0 before the first attempt
	LastAttempt  int64
	NextAttempt  int64 // unix nanos; 0 means as soon as possible
	LastStatus   int   // HTTP status of the last attempt, 0 when none came
	LastError    string
	FailedAt     int64 // unix nanos when dead-lettered
}

const batchVersion = 1

var be = binary.BigEndian

var (
	seqKey    = []byte("mseq")
	layoutKey = []byte("mlayout")
	flushKey  = []byte("zflush")
)

// layout is the version of the key layout (store.go) this build writes. It
// reads every earlier one, and refuses a store of a later one.
const layout = 2

func eventKey(seq uint64) []byte { return be.AppendUint64([]byte{'e'}, seq) }
func refKey(seq uint64) []byte   { return be.AppendUint64([]byte{'r'}, seq) }
func batchKey(id string) []byte  { return append([]byte{'b'}, id...) }
func deadKey(id string) []byte   { return append([]byte{'x'}, id...) }
func headKey(sub string) []byte  { return append([]byte{'h'}, sub...) }
func pauseKey(sub string) []byte { return append([]byte{'p'}, sub...) }

func queuePrefix(sub string) []byte {
	k := make([]byte, 0, len(sub)+2)
	k = append(k, 'q')
	k = append(k, sub...)
	return append(k, 0)
}

func (b *Batch) marshal(dst []byte) []byte {
	dst = append(dst, batchVersion)
	dst = appendString(dst, b.ID)
	dst = appendString(dst, b.Subscriber)
	dst = binary.AppendVarint(dst, b.Created)
	dst = binary.AppendUvarint(dst, uint64(b.Attempts))
	dst = binary.AppendVarint(dst, b.FirstAttempt)
	dst = binary.AppendVarint(dst, b.LastAttempt)
	dst = binary.AppendVarint(dst, b.NextAttempt)
	dst = binary.AppendUvarint(dst, uint64(b.LastStatus))
	dst = appendString(dst, b.LastError)
	dst = binary.AppendVarint(dst, b.FailedAt)
	dst = binary.AppendUvarint(dst, uint64(len(b.Seqs)))
	var prev uint64
	for _, s := range b.Seqs {
		dst = binary.AppendUvarint(dst, s-prev)
		prev = s
	}
	return dst
}

var errCorrupt = errors.New("corrupt batch record")

func unmarshalBatch(v []byte) (*Batch, error) {
	d := decoder{b: v}
	if d.byte() != batchVersion {
		return nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	b := &Batch{
		ID:           d.string(),
		Subscriber:   d.string(),
		Created:      d.varint(),
		Attempts:     int(d.uvarint()),
		FirstAttempt: d.varint(),
		LastAttempt:  d.varint(),
		NextAttempt:  d.varint(),
		LastStatus:   int(d.uvarint()),
		LastError:    d.string(),
		FailedAt:     d.varint(),
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(v)) {
		d.err = errCorrupt
	}
	if d.err != nil {
		return nil, d.err
	}
	b.Seqs = make([]uint64, n)
	var prev uint64
	for i := range b.Seqs {
		prev += d.uvarint()
		b.Seqs[i] = prev
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return b, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
