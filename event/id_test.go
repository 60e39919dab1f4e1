package event

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendIDLayout(t *testing.T) {
	now := time.UnixMilli(1764756000123)
	id := AppendID([]byte("x"), "evt_", now)
	if !strings.HasPrefix(string(id), "xevt_") || len(id) != len("xevt_")+IDLen {
		t.Fatalf("got %q", id)
	}
	s := string(id[len("xevt_"):])
	for _, c := range s {
		if !strings.ContainsRune(crockford, c) {
			t.Fatalf("%q: %q is not Crockford base32", s, c)
		}
	}
	if s[0] > '7' {
		t.Fatalf("%q: first character above 7 overflows 128 bits", s)
	}
	// The first 10 characters are the millisecond time.
	var ms int64
	for _, c := range s[:10] {
		ms = ms<<5 | int64(strings.IndexRune(crockford, c))
	}
	if ms < now.UnixMilli() {
		t.Fatalf("%q: time %d, want at least %d", s, ms, now.UnixMilli())
	}

	// Known values: time 0 and the largest time.
	src := newIDSource()
	if got := string(src.append(nil, "", time.UnixMilli(0))); got[:10] != "0000000000" {
		t.Fatalf("time 0: got %q", got)
	}
	if got := string(src.append(nil, "", time.UnixMilli(-5))); got[:10] != "0000000000" {
		t.Fatalf("time before 1970: got %q", got)
	}
	if got := string(src.append(nil, "", time.UnixMilli(1<<48-1).Add(time.Hour))); got[:10] != "7ZZZZZZZZZ" {
		t.Fatalf("largest time: got %q", got)
	}
}

func TestAppendIDIncreasing(t *testing.T) {
	f := func(name string, clock func(i int) time.Time) {
		t.Helper()
		const n = 100000
		prev := ""
		var buf []byte
		for i := range n {
			buf = AppendID(buf[:0], "", clock(i))
			id := string(buf)
			if id <= prev {
				t.Fatalf("%s: id %d %q is not above %q", name, i, id, prev)
			}
			prev = id
		}
	}
	base := time.Now().Add(time.Hour) // ahead of every id issued so far
	f("one millisecond", func(int) time.Time { return base })
	f("clock stepping back", func(i int) time.Time { return base.Add(-time.Duration(i%7) * time.Second) })
	f("advancing clock", func(i int) time.Time { return base.Add(time.Duration(i) * time.Millisecond) })
	f("real clock", func(int) time.Time { return time.Now() })
}

func TestAppendIDRandomPartCarries(t *testing.T) {
	src := newIDSource()
	now := time.UnixMilli(1764756000123)
	src.append(nil, "", now)
	src.lo = 1<<64 - 1
	src.hi = 0xffff
	a := string(src.append(nil, "", now))
	b := string(src.append(nil, "", now))
	if a >= b {
		t.Fatalf("carry out of the random part: %q then %q", a, b)
	}
	// The next millisecond is borrowed, its random part starting from the
	// step that carried (under 2^32: the first nine digits are zero).
	next := string(newIDSource().append(nil, "", now.Add(time.Millisecond)))[:10]
	if a[:10] != next || b[:10] != next || a[10:19] != "000000000" {
		t.Fatalf("after 2^80 ids in a millisecond: %q, %q (want time %s)", a, b, next)
	}
}

// TestAppendIDStepUnguessable: within one millisecond the random part
// grows by a random step, so the next id cannot be told from the last.
func TestAppendIDStepUnguessable(t *testing.T) {
	src := newIDSource()
	now := time.UnixMilli(1764756000123)
	src.append(nil, "", now)
	ones := 0
	for range 20 {
		before := src.lo
		src.append(nil, "", now)
		if src.lo-before == 1 {
			ones++
		}
	}
	if ones == 20 {
		t.Fatal("every id within one millisecond is the last one plus one")
	}
}

func TestAppendIDConcurrent(t *testing.T) {
	const goroutines, perG = 8, 20000
	all := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			got := make([]string, 0, perG)
			var buf []byte
			for range perG {
				buf = AppendID(buf[:0], "evt_", time.Now())
				got = append(got, string(buf))
			}
			all[g] = got
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*perG)
	for g, got := range all {
		if !slices.IsSorted(got) {
			t.Fatalf("goroutine %d: ids not increasing", g)
		}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}
