package batcher

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func ev(i, size int) []byte {
	pad := max(size-len(`{"id":"e0000","data":""}`), 0)
	return []byte(fmt.Sprintf(`{"id":"e%04d","data":"%s"}`, i, strings.Repeat("x", pad)))
}

func TestFlushOnEvents(t *testing.T) {
	b := New(Limits{MaxEvents: 3, MaxBytes: 1 << 20, MaxWait: time.Second}, "s")
	for i := range 3 {
		if b.Full() != None {
			t.Fatalf("full after %d events", i)
		}
		if !b.Add(uint64(i+1), ev(i, 30), int64(i)) {
			t.Fatalf("event %d refused", i)
		}
	}
	if b.Full() != Events || b.Len() != 3 {
		t.Fatalf("Full() = %v, Len() = %d", b.Full(), b.Len())
	}
	if b.Add(4, ev(4, 30), 4) {
		t.Fatal("a full batch took another event")
	}
	b.Reset()
	if b.Len() != 0 || b.Full() != None || len(b.Seqs()) != 0 || len(b.Recvs()) != 0 {
		t.Fatal("Reset left state behind")
	}
}

// TestMaxBytesNeverExceeded fills batches of many sizes and checks every
// encoded body stays within MaxBytes, even with the longest batch id.
func TestMaxBytesNeverExceeded(t *testing.T) {
	id := "b_" + strings.Repeat("Z", 26) + ".1.2.1"
	for _, maxBytes := range []int{1024, 1500, 4096} {
		for _, size := range []int{30, 100, 333, 700} {
			b := New(Limits{MaxEvents: 10000, MaxBytes: maxBytes, MaxWait: time.Second}, "orders")
			batches := 0
			for i := 0; i < 200; i++ {
				e := ev(i, size)
				if !b.Add(uint64(i), e, 0) {
					if b.Full() != Bytes {
						t.Fatalf("refused with Full() = %v", b.Full())
					}
					body := b.AppendBody(nil, id)
					if len(body) > maxBytes {
						t.Fatalf("max_bytes %d, events of %d: body of %d bytes", maxBytes, size, len(body))
					}
					if !json.Valid(body) {
						t.Fatalf("invalid body %s", body)
					}
					batches++
					b.Reset()
					if !b.Add(uint64(i), e, 0) {
						t.Fatal("an empty batch refused an event")
					}
				}
			}
			if batches == 0 {
				t.Fatalf("max_bytes %d, size %d: never flushed on bytes", maxBytes, size)
			}
		}
	}
}

func TestOversizedEventAlone(t *testing.T) {
	b := New(Limits{MaxEvents: 10, MaxBytes: 1024, MaxWait: time.Second}, "s")
	if !b.Add(1, ev(1, 5000), 0) {
		t.Fatal("an empty batch must take an event larger than max_bytes")
	}
	if b.Full() != Bytes {
		t.Fatalf("Full() = %v, want bytes", b.Full())
	}
}

func TestDeadlineFromOldest(t *testing.T) {
	b := New(Limits{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: 2 * time.Second}, "s")
	b.Add(1, ev(1, 20), 100)
	b.Add(2, ev(2, 20), 50) // received earlier but queued later: still the first event's deadline
	if got, want := b.Deadline(), int64(100+2*time.Second); got != want {
		t.Fatalf("Deadline() = %d, want %d", got, want)
	}
}

func TestBody(t *testing.T) {
	b := New(Limits{MaxEvents: 10, MaxBytes: 1 << 20, MaxWait: time.Second}, "orders")
	b.Add(7, []byte(`{"id":"a","data":1}`), 0)
	b.Add(9, []byte(`{"id":"b","data":[1, 2]}`), 0)
	got := string(b.AppendBody(nil, "b_X"))
	want := `{"batch":true,"batch_id":"b_X","subscriber":"orders","count":2,"events":[{"id":"a","data":1},{"id":"b","data":[1, 2]}]}`
	if got != want {
		t.Fatalf("body\n%s\nwant\n%s", got, want)
	}
	if s := b.Seqs(); len(s) != 2 || s[0] != 7 || s[1] != 9 {
		t.Fatalf("Seqs() = %v", s)
	}
	if r := (Reason(99)).String(); r != "none" {
		t.Fatalf("unknown reason %q", r)
	}
}

func TestAddAllocs(t *testing.T) {
	b := New(Limits{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Second}, "s")
	e := ev(1, 300)
	for i := range 100 {
		b.Add(uint64(i), e, 0)
	}
	b.Reset()
	body := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 100 {
			b.Add(uint64(i), e, 0)
		}
		body = b.AppendBody(body[:0], "b_X")
		b.Reset()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per 100-event batch, want 0", allocs)
	}
}

func BenchmarkBatch100(b *testing.B) {
	bt := New(Limits{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Second}, "s")
	e := ev(1, 300)
	body := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(100 * len(e)))
	for b.Loop() {
		for i := range 100 {
			bt.Add(uint64(i), e, 0)
		}
		body = bt.AppendBody(body[:0], "b_X")
		bt.Reset()
	}
}
