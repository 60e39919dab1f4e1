// Package event is the producer event on the hot path: the ingest body
// parser (DESIGN §5), the stored record that is the Badger value of one event,
// the JSON form of an event inside a delivered batch (DESIGN §6), and sortable
// unique ids.
//
// Every function appends to a caller's dst and allocates nothing per event in
// the common case; slices returned alias the caller's input.
package event

import (
	"errors"
	"strconv"
)

// Limits of the ingest contract (DESIGN §5).
const (
	// MaxIDBytes is the longest id, in bytes after JSON decoding.
	MaxIDBytes = 256
	// MaxTypeChars is the longest type, in Unicode code points.
	MaxTypeChars = 128
	// MaxDataDepth is how deeply arrays and objects may nest inside data:
	// a scalar is depth 0, [[1]] is depth 2.
	MaxDataDepth = 128
)

// Event is one producer event parsed from an ingest body. Its slices alias the body
// (or a fresh allocation when a string literal had escapes) and stay valid while the body does.
type Event struct {
	ID        []byte // decoded string value; nil when the key is absent
	Type      []byte // decoded string value
	Timestamp []byte // decoded string value (RFC 3339); nil when absent
	Data      []byte // the raw JSON value exactly as written, byte for byte
}

// ParseError is a rejected body. Index is the event's position in the array (0 for a
// single object) or -1 when the problem is not tied to one event; Field names the key ("" if none).
type ParseError struct {
	Index int
	Field string
	Msg   string
}

// Error returns the problem as one line fit for a 400 answer, such as
// `event 3: "type": must be a string of 1-128 characters` or
// `body: invalid JSON at offset 17: unexpected character 'x'`.
func (e *ParseError) Error() string {
	b := make([]byte, 0, 32+len(e.Field)+len(e.Msg))
	if e.Index < 0 {
		b = append(b, "body: "...)
	} else {
		b = append(b, "event "...)
		b = strconv.AppendInt(b, int64(e.Index), 10)
		b = append(b, ": "...)
	}
	if e.Field != "" {
		b = strconv.AppendQuote(b, e.Field)
		b = append(b, ": "...)
	}
	b = append(b, e.Msg...)
	return string(b)
}

// ErrTooManyEvents is returned by Parse when the body holds more events than
// allowed; the relay answers 413.
var ErrTooManyEvents = errors.New("too many events in request")
