package event

import (
	"bytes"
	"testing"
	"time"
)

// These tests pin the hot path at zero allocations per event.

func TestParseAllocs(t *testing.T) {
	utc := sampleArray(100)
	offset := bytes.ReplaceAll(utc, []byte(`.123Z"`), []byte(`.123+02:00"`))
	for _, body := range [][]byte{utc, offset} {
		dst := make([]Event, 0, 100)
		var err error
		n := testing.AllocsPerRun(100, func() {
			dst, err = Parse(dst[:0], body, 1000)
		})
		if err != nil || len(dst) != 100 {
			t.Fatalf("Parse: %d events, %v", len(dst), err)
		}
		if n != 0 {
			t.Fatalf("Parse of 100 events (timestamp %s): %v allocations, want 0", dst[0].Timestamp, n)
		}
	}
}

func TestAppendRecordAllocs(t *testing.T) {
	evs, err := Parse(nil, []byte(sampleEvent), 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendRecord(buf[:0], &evs[0], 1764756000000000000) }); n != 0 {
		t.Fatalf("AppendRecord: %v allocations, want 0", n)
	}
	var r Record
	if n := testing.AllocsPerRun(100, func() { r, err = DecodeRecord(buf) }); n != 0 || err != nil {
		t.Fatalf("DecodeRecord: %v allocations, %v", n, err)
	}
	out := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { out = AppendJSON(out[:0], &r) }); n != 0 {
		t.Fatalf("AppendJSON: %v allocations, want 0", n)
	}
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { out = AppendID(out[:0], "evt_", now) }); n != 0 {
		t.Fatalf("AppendID: %v allocations, want 0", n)
	}
}
