package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzBodies seed FuzzParse; `go test` runs them as tests.
var fuzzBodies = []string{
	sampleEvent,
	`{"type":"a","data":null}`,
	`[{"type":"a","data":1},{"id":"x","type":"b","timestamp":"2026-12-03T10:00:00+02:00","data":[1,{"k":"v"}]}]`,
	` [ { "data" : { } , "type" : "\u00e9\ud83d\ude00" } ] `,
	`{"\u0074ype":"a","data":"\n\"\\"}`,
	`{"type":"a","data":-0.5e-7}`,
	`{"type":"a","data":1e400}`,
	`{"type":"a","data":12345678901234567890}`,
	`{"type":"a","data":[[[[[[[[[[{"a":[]}]]]]]]]]]]}`,
	`{"type":"a","data":` + strings.Repeat("[", 129) + strings.Repeat("]", 129) + `}`,
	`{"type":"a","data":"\ud800"}`,
	`{"type":"a","data":"\xff"}`,
	`{"type":"a","data":01}`,
	`{"type":"a","data":1,"x":2}`,
	`{"type":"a","type":"a","data":1}`,
	`{"type":"","data":1}`,
	`{"id":"\u0000","type":"a","data":1}`,
	`{"timestamp":"2026-02-29T10:00:00Z","type":"a","data":1}`,
	`{"timestamp":"2024-02-29T1:00:00Z","type":"a","data":1}`,
	`[]`, `[1]`, `"x"`, ``, `{`, `[{"type":"a","data":1},]`, `{"type":"a","data":1} x`,
}

func FuzzParse(f *testing.F) {
	for _, b := range fuzzBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := Parse(nil, body, 0)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Error() == "" || len(evs) != 0 {
				t.Fatalf("Parse(%q): %v, %d events", body, err, len(evs))
			}
			// A body that encoding/json takes fails as JSON only for what
			// this parser adds: UTF-8 validity and paired surrogates.
			if strings.HasPrefix(pe.Msg, "invalid JSON") && json.Valid(body) && utf8.Valid(body) && !hasSurrogateEscape(body) {
				t.Fatalf("Parse(%q): %v, but encoding/json accepts it", body, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Parse accepted invalid JSON %q", body)
		}
		if len(evs) == 0 {
			t.Fatalf("Parse(%q): no events and no error", body)
		}
		checkAgainstEncodingJSON(t, body, evs)
		var rec, out []byte
		for i := range evs {
			ev := &evs[i]
			if !json.Valid(ev.Data) {
				t.Fatalf("event %d: invalid data %q", i, ev.Data)
			}
			if n := utf8.RuneCount(ev.Type); n < 1 || n > MaxTypeChars || !utf8.Valid(ev.Type) {
				t.Fatalf("event %d: bad type %q", i, ev.Type)
			}
			if ev.ID != nil && (len(ev.ID) < 1 || len(ev.ID) > MaxIDBytes || hasControl(ev.ID) || !utf8.Valid(ev.ID)) {
				t.Fatalf("event %d: bad id %q", i, ev.ID)
			}
			if ev.Timestamp != nil {
				if _, err := time.Parse(time.RFC3339Nano, string(ev.Timestamp)); err != nil {
					t.Fatalf("event %d: bad timestamp: %v", i, err)
				}
			}
			rec = AppendRecord(rec[:0], ev, int64(i))
			r, err := DecodeRecord(rec)
			if err != nil {
				t.Fatalf("event %d: DecodeRecord: %v", i, err)
			}
			out = AppendJSON(out[:0], &r)
			checkDeliveryJSON(t, out, &r)
		}
	})
}

func hasSurrogateEscape(b []byte) bool {
	b = bytes.ToLower(b)
	for _, s := range []string{`\ud8`, `\ud9`, `\uda`, `\udb`, `\udc`, `\udd`, `\ude`, `\udf`} {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

func FuzzDecodeRecord(f *testing.F) {
	ev := Event{ID: []byte("evt_1"), Type: []byte("order.created"), Timestamp: []byte("2026-12-03T10:00:00Z"), Data: []byte(`{"a":1}`)}
	f.Add(AppendRecord(nil, &ev, 1764756000000000000))
	f.Add(AppendRecord(nil, &Event{Type: []byte("a"), Data: []byte("1")}, -1))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte("\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Add([]byte("\x01\x00\x00\x01a\x00"))
	f.Add([]byte("\x02\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("DecodeRecord(%q): %v is not ErrCorruptRecord", b, err)
			}
			return
		}
		// What decodes encodes back to the same values.
		again := AppendRecord(nil, &Event{ID: r.ID, Type: r.Type, Timestamp: r.Timestamp, Data: r.Data}, r.Recv)
		r2, err := DecodeRecord(again)
		if err != nil || r2.Recv != r.Recv || !bytes.Equal(r2.ID, r.ID) || !bytes.Equal(r2.Type, r.Type) ||
			!bytes.Equal(r2.Timestamp, r.Timestamp) || !bytes.Equal(r2.Data, r.Data) {
			t.Fatalf("re-encoding %q: %+v, %v", b, r2, err)
		}
		_ = AppendJSON(nil, &r)
	})
}

// FuzzTimestamp checks the timestamp rule against time.Parse, which defines it.
func FuzzTimestamp(f *testing.F) {
	for _, s := range []string{
		"2026-12-03T10:00:00Z", "2026-12-03T10:00:00.123456789Z", "2026-12-03T10:00:00.1234567891234+02:00",
		"2024-02-29T23:59:59-23:59", "2023-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "0000-01-01T00:00:00Z",
		"2026-12-03T24:00:00Z", "2026-12-03T10:60:00Z", "2026-12-03T10:00:60Z", "2026-12-03T10:00:00+24:00",
		"2026-12-03T10:00:00+02:60", "2026-12-03T10:00:00.Z", "2026-12-03T10:00:00,5Z", "2026-12-03t10:00:00z",
		"2026-12-03T1:00:00Z", "2026-12-03T10:00:00+0200", "2026-12-03 10:00:00Z", "", "Z", "2026-12-03T10:00:00",
		"+2026-12-03T10:00:00Z", "2026-1-03T10:00:00Z", "2026-12-03T10:00:00.5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := time.Parse(time.RFC3339Nano, s)
		if got := validTimestamp([]byte(s)); got != (err == nil) {
			t.Fatalf("validTimestamp(%q) = %v, time.Parse: %v", s, got, err)
		}
		if rfc3339([]byte(s)) && err != nil {
			t.Fatalf("rfc3339(%q) accepts what time.Parse rejects: %v", s, err)
		}
	})
}
