package event

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	f := func(ev Event, recv int64) {
		t.Helper()
		prefix := []byte("keep")
		b := AppendRecord(prefix, &ev, recv)
		if string(b[:4]) != "keep" {
			t.Fatalf("AppendRecord overwrote dst")
		}
		r, err := DecodeRecord(b[4:])
		if err != nil {
			t.Fatalf("DecodeRecord: %v", err)
		}
		if string(r.ID) != string(ev.ID) || string(r.Type) != string(ev.Type) ||
			string(r.Timestamp) != string(ev.Timestamp) || string(r.Data) != string(ev.Data) || r.Recv != recv {
			t.Fatalf("round trip of %+v at %d gave %+v", ev, recv, r)
		}
		for _, v := range [][]byte{r.ID, r.Type, r.Timestamp} {
			if cap(v) != len(v) {
				t.Fatalf("field capacity %d reaches past its length %d", cap(v), len(v))
			}
		}
	}
	f(Event{ID: []byte("evt_1"), Type: []byte("order.created"), Timestamp: []byte("2026-12-03T10:00:00Z"), Data: []byte(`{"a":1}`)}, 1764756000000000000)
	f(Event{Type: []byte("a"), Data: []byte("null")}, 0)
	f(Event{Type: []byte("a"), Data: []byte("1")}, -1)
	f(Event{Type: []byte("a"), Data: []byte("1")}, math.MinInt64)
	f(Event{Type: []byte("a"), Data: []byte("1")}, math.MaxInt64)
	f(Event{ID: []byte(strings.Repeat("i", 256)), Type: []byte(strings.Repeat("é", 128)), Data: []byte(strings.Repeat("[", 10000))}, 42)
	f(Event{ID: []byte("\x00\xff"), Type: []byte{}, Timestamp: []byte("x"), Data: []byte(`"\u0000"`)}, 7)
}

func TestRecordLayout(t *testing.T) {
	ev := Event{ID: []byte("ab"), Type: []byte("t"), Timestamp: []byte("ts"), Data: []byte("{}")}
	got := AppendRecord(nil, &ev, -2)
	want := "\x01\x03\x02ab\x01t\x02ts{}"
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestDecodeRecordCorrupt(t *testing.T) {
	f := func(b string, wantMsg string) {
		t.Helper()
		_, err := DecodeRecord([]byte(b))
		if !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("DecodeRecord(%q): %v, want %q", b, err, wantMsg)
		}
	}
	f("", "empty")
	f("\x02\x00\x00\x00\x00{}", "unknown version 2")
	f("\x00", "unknown version 0")
	f("\x01", "bad receive time")
	f("\x01\x80", "bad receive time")
	f("\x01"+strings.Repeat("\xff", 10)+"\x01", "bad receive time") // varint overflow
	f("\x01\x00", "bad id")
	f("\x01\x00\x05abc", "bad id")
	f("\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "bad id") // length 2^64-1
	f("\x01\x00\xff\xff\xff\xff\xff\xff\xff\x7f", "bad id")         // length near 2^63
	f("\x01\x00\x00", "bad type")
	f("\x01\x00\x00\x02a", "bad type")
	f("\x01\x00\x00\x01a", "bad timestamp")
	f("\x01\x00\x00\x01a\x03ab", "bad timestamp")
	f("\x01\x00\x00\x01a\x00", "no data")

	// Every truncation of a good record is an error or, when only data is
	// cut, decodes to a prefix of it.
	ev := Event{ID: []byte("evt_1"), Type: []byte("order.created"), Timestamp: []byte("2026-12-03T10:00:00Z"), Data: []byte(`{"a":1}`)}
	b := AppendRecord(nil, &ev, 1764756000000000000)
	dataStart := len(b) - len(ev.Data)
	for n := 0; n < len(b); n++ {
		r, err := DecodeRecord(b[:n])
		if n <= dataStart {
			if err == nil {
				t.Fatalf("DecodeRecord of %d of %d bytes: no error", n, len(b))
			}
			continue
		}
		if err != nil || string(r.Data) != string(ev.Data[:n-dataStart]) {
			t.Fatalf("DecodeRecord of %d of %d bytes: %q, %v", n, len(b), r.Data, err)
		}
	}
}
