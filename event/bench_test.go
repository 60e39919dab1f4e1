package event

import (
	"strings"
	"testing"
	"time"
)

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
		n    int
	}{
		{"single", []byte(sampleEvent), 1},
		{"array100", sampleArray(100), 100},
		{"text4k", []byte(`{"type":"note.added","data":{"text":"` + strings.Repeat("Lorem ipsum dolor sit amet, ", 150) + `"}}`), 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst := make([]Event, 0, bc.n)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				var err error
				if dst, err = Parse(dst[:0], bc.body, 1000); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bc.n), "ns/event")
		})
	}
}

func benchRecord(b *testing.B) ([]byte, *Event) {
	evs, err := Parse(nil, []byte(sampleEvent), 0)
	if err != nil {
		b.Fatal(err)
	}
	return AppendRecord(nil, &evs[0], 1764756000000000000), &evs[0]
}

func BenchmarkAppendRecord(b *testing.B) {
	rec, ev := benchRecord(b)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		buf = AppendRecord(buf[:0], ev, 1764756000000000000)
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	rec, _ := benchRecord(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if _, err := DecodeRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	rec, _ := benchRecord(b)
	r, err := DecodeRecord(rec)
	if err != nil {
		b.Fatal(err)
	}
	buf := AppendJSON(nil, &r)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		buf = AppendJSON(buf[:0], &r)
	}
}

func BenchmarkAppendID(b *testing.B) {
	now := time.Now()
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len("evt_") + IDLen))
	for b.Loop() {
		buf = AppendID(buf[:0], "evt_", now)
	}
}

func BenchmarkAppendIDParallel(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len("evt_") + IDLen))
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 64)
		for pb.Next() {
			buf = AppendID(buf[:0], "evt_", time.Now())
		}
	})
}
