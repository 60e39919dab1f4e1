package event

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// recordVersion is the first byte of every stored record. A change to the
// layout takes a new version; DecodeRecord keeps reading the old ones.
const recordVersion = 1

// AppendRecord appends the stored form of ev, received at recvUnixNano, to dst.
//
// The layout (version 1) is: the version byte, the receive time as a varint,
// then id, type and timestamp each as a uvarint length and its bytes, then
// data, which runs to the end. A nil field is stored empty.
func AppendRecord(dst []byte, ev *Event, recvUnixNano int64) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendVarint(dst, recvUnixNano)
	dst = appendField(dst, ev.ID)
	dst = appendField(dst, ev.Type)
	dst = appendField(dst, ev.Timestamp)
	return append(dst, ev.Data...)
}

func appendField(dst, v []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

// Record is a decoded stored event; its slices alias the decoded buffer.
type Record struct {
	ID, Type, Timestamp, Data []byte
	Recv                      int64 // receive time, Unix nanoseconds
}

// ErrCorruptRecord is wrapped by every DecodeRecord error.
var ErrCorruptRecord = errors.New("corrupt event record")

// DecodeRecord decodes b (written by AppendRecord); a corrupt or truncated b is an error, never a panic.
//
// A record must have non-empty data: data has no length of its own, so a
// record cut at the end of its timestamp is only detectable this way. A cut
// inside data is not detectable; Badger's checksums guard against that.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) == 0 {
		return r, fmt.Errorf("%w: empty", ErrCorruptRecord)
	}
	if b[0] != recordVersion {
		return r, fmt.Errorf("%w: unknown version %d", ErrCorruptRecord, b[0])
	}
	b = b[1:]
	recv, n := binary.Varint(b)
	if n <= 0 {
		return r, fmt.Errorf("%w: bad receive time", ErrCorruptRecord)
	}
	r.Recv = recv
	b = b[n:]
	var ok bool
	if r.ID, b, ok = decodeField(b); !ok {
		return r, fmt.Errorf("%w: bad id", ErrCorruptRecord)
	}
	if r.Type, b, ok = decodeField(b); !ok {
		return r, fmt.Errorf("%w: bad type", ErrCorruptRecord)
	}
	if r.Timestamp, b, ok = decodeField(b); !ok {
		return r, fmt.Errorf("%w: bad timestamp", ErrCorruptRecord)
	}
	if len(b) == 0 {
		return r, fmt.Errorf("%w: no data", ErrCorruptRecord)
	}
	r.Data = b
	return r, nil
}

// decodeField splits a uvarint-length-prefixed field off the front of b. The
// field's capacity is cut so that appending to it cannot overwrite the rest.
func decodeField(b []byte) (v, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	end := k + int(n)
	return b[k:end:end], b[end:], true
}
