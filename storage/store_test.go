package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/storage"
)

func TestAppendRead(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	q := mustQueue(t, s, "a")
	if q2 := mustQueue(t, s, "a"); q2 != q {
		t.Fatalf("Queue returned a second *Queue for the same subscriber")
	}
	if q.ID() != "a" {
		t.Fatalf("ID() = %q", q.ID())
	}
	checkDepth(t, q, 0)
	if evs := readQueue(t, q, 0); len(evs) != 0 {
		t.Fatalf("new queue holds %v", evs)
	}

	if dup := mustAppend(t, s, ev("e1", q), ev("e2", q), ev("e3", q)); slices.Contains(dup, true) {
		t.Fatalf("dup = %v without dedup", dup)
	}
	select {
	case <-q.Notify():
	default:
		t.Fatalf("Notify was not signalled by Append")
	}
	mustAppend(t, s, ev("e4", q))
	mustAppend(t, s)
	mustAppend(t, s, ev("e5", q))
	checkDepth(t, q, 5)

	all := readQueue(t, q, 0)
	checkIDs(t, "Read(0)", all, "e1", "e2", "e3", "e4", "e5")
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("sequence numbers not increasing: %v", seqs(all))
		}
	}

	f := func(after uint64, max int, stopAfter int, want ...string) {
		t.Helper()
		var out []got
		err := q.Read(after, max, func(seq uint64, rec []byte) bool {
			out = append(out, decode(t, seq, rec))
			return len(out) < stopAfter
		})
		if err != nil {
			t.Fatalf("Read(%d, %d): %v", after, max, err)
		}
		checkIDs(t, fmt.Sprintf("Read(%d, %d) stopping after %d", after, max, stopAfter), out, want...)
	}
	f(0, 100, 100, "e1", "e2", "e3", "e4", "e5")
	f(0, 2, 100, "e1", "e2")
	f(0, 100, 1, "e1")
	f(0, 0, 100)
	f(all[1].Seq, 100, 100, "e3", "e4", "e5")
	f(all[1].Seq, 2, 100, "e3", "e4")
	f(all[4].Seq, 100, 100)
	f(all[4].Seq+1000, 100, 100)
}

func TestAppendFanOut(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	a, b, c := mustQueue(t, s, "a"), mustQueue(t, s, "b"), mustQueue(t, s, "c")
	mustAppend(t, s, ev("ab", a, b), ev("a", a), ev("bc", b, c))
	mustAppend(t, s, ev("abc", a, b, c))
	checkDepth(t, a, 3)
	checkDepth(t, b, 3)
	checkDepth(t, c, 2)
	ea, eb, ec := readQueue(t, a, 0), readQueue(t, b, 0), readQueue(t, c, 0)
	checkIDs(t, "queue a", ea, "ab", "a", "abc")
	checkIDs(t, "queue b", eb, "ab", "bc", "abc")
	checkIDs(t, "queue c", ec, "bc", "abc")
	// One event has one sequence number whichever queue it is read from.
	if ea[0].Seq != eb[0].Seq || eb[1].Seq != ec[0].Seq || ea[2].Seq != eb[2].Seq || eb[2].Seq != ec[1].Seq {
		t.Fatalf("fan-out events got different sequence numbers: a %v, b %v, c %v", seqs(ea), seqs(eb), seqs(ec))
	}

	ba, bb, bc := mustBatch(t, a, "ba", 3), mustBatch(t, b, "bb", 3), mustBatch(t, c, "bc", 2)
	checkReadable := func(bs ...*storage.Batch) {
		t.Helper()
		for _, x := range bs {
			evs, err := readBatch(t, s, x)
			if err != nil {
				t.Fatalf("ReadBatch %s: %v", x.ID, err)
			}
			if !slices.Equal(seqs(evs), x.Seqs) {
				t.Fatalf("ReadBatch %s read seqs %v, want %v", x.ID, seqs(evs), x.Seqs)
			}
		}
	}
	checkReadable(ba, bb, bc)

	// The record shared with other queues outlives the ack of one of them.
	if err := s.Ack(ba); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	checkDepth(t, a, 0)
	checkDepth(t, b, 3)
	checkReadable(bb, bc)
	evs, err := readBatch(t, s, bb)
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "batch of b after a's ack", evs, "ab", "bc", "abc")
	if _, err := readBatch(t, s, ba); err == nil {
		t.Fatalf("ReadBatch of acked batch %s holding an event of a alone succeeded", ba.ID)
	}

	if err := s.Ack(bb); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	checkReadable(bc)
	if err := s.Ack(bc); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	for _, q := range []*storage.Queue{a, b, c} {
		checkDepth(t, q, 0)
	}
	// Every record is gone once the last holder is acked.
	for _, x := range []*storage.Batch{ba, bb, bc} {
		for _, seq := range x.Seqs {
			one := &storage.Batch{ID: x.ID, Subscriber: x.Subscriber, Seqs: []uint64{seq}}
			if _, err := readBatch(t, s, one); err == nil {
				t.Fatalf("event %d of batch %s is still stored after every holder acked it", seq, x.ID)
			}
		}
	}
}

// Releasing skips the look-up of reference counts while no event is shared:
// the shared events must be counted again after a reopen, and counted when
// they come back after every earlier one was released.
func TestSharedRecordsCounted(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	mustAppend(t, s, ev("solo1", a), ev("shared1", a, b))
	mustClose(t, s)

	s = mustOpen(t, dir)
	a, b = mustQueue(t, s, "a"), mustQueue(t, s, "b")
	ack := func(x *storage.Batch) {
		t.Helper()
		if err := s.Ack(x); err != nil {
			t.Fatalf("Ack %s: %v", x.ID, err)
		}
	}
	readable := func(x *storage.Batch, ids ...string) {
		t.Helper()
		evs, err := readBatch(t, s, x)
		if err != nil {
			t.Fatalf("ReadBatch %s: %v", x.ID, err)
		}
		checkIDs(t, "batch "+x.ID, evs, ids...)
	}
	ack(mustBatch(t, a, "a1", 2))
	b1 := mustBatch(t, b, "b1", 1)
	readable(b1, "shared1") // its record outlived a's ack after the reopen
	ack(b1)

	// Nothing shared is stored now; then a shared event comes again.
	mustAppend(t, s, ev("solo2", a), ev("shared2", a, b))
	ack(mustBatch(t, a, "a2", 2))
	readable(mustBatch(t, b, "b2", 1), "shared2")
}

// A fan-out event held by a dead letter stays stored after the other
// subscriber's ack, until the dead letter is dropped.
func TestFanOutDeadLetterHoldsRecord(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	mustAppend(t, s, ev("x", a, b), ev("y", a, b))
	ba, bb := mustBatch(t, a, "ba", 2), mustBatch(t, b, "bb", 2)
	if err := s.DeadLetter(ba); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(bb); err != nil {
		t.Fatal(err)
	}
	dl, err := s.GetDeadLetter("ba")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readBatch(t, s, dl)
	if err != nil {
		t.Fatalf("ReadBatch of dead letter after the other subscriber's ack: %v", err)
	}
	checkIDs(t, "dead letter", evs, "x", "y")
	if err := s.DropDeadLetter("ba"); err != nil {
		t.Fatal(err)
	}
	if _, err := readBatch(t, s, dl); err == nil {
		t.Fatalf("ReadBatch of a dropped dead letter succeeded")
	}
}

func TestDedup(t *testing.T) {
	s := mustOpen(t, t.TempDir(), withDedup(time.Hour))
	q, r := mustQueue(t, s, "q"), mustQueue(t, s, "r")
	f := func(items []storage.AppendItem, want ...bool) {
		t.Helper()
		if dup := mustAppend(t, s, items...); !slices.Equal(dup, want) {
			t.Fatalf("dup = %v, want %v", dup, want)
		}
	}
	// Within one call.
	f([]storage.AppendItem{ev("x", q), ev("y", q), ev("x", q)}, false, false, true)
	// Across calls; the dup of an event is not stored in any of its queues.
	f([]storage.AppendItem{ev("z", q), ev("x", q, r), ev("y", r)}, false, true, true)
	// A nil ID never counts as a duplicate.
	noID := storage.AppendItem{Record: record("n", dataOf("n")), Queues: []*storage.Queue{q}}
	f([]storage.AppendItem{noID, noID}, false, false)
	f([]storage.AppendItem{noID}, false)
	// dup is overwritten, not only set.
	dup := []bool{true, true}
	if err := s.Append([]storage.AppendItem{ev("w", q), ev("x", q)}, dup); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dup, []bool{false, true}) {
		t.Fatalf("dup = %v over a dirty slice", dup)
	}
	// A fresh id is stored without a look-up, and marked: seen again, it
	// is a duplicate.
	fresh := ev("f", q)
	fresh.Fresh = true
	f([]storage.AppendItem{fresh, ev("f", q)}, false, true)
	f([]storage.AppendItem{ev("f", q)}, true)
	checkIDs(t, "queue q", readQueue(t, q, 0), "x", "y", "z", "n", "n", "n", "w", "f")
	checkDepth(t, q, 8)
	checkDepth(t, r, 0)

	// The dedup index survives a reopen.
	dir := t.TempDir()
	s2 := mustOpen(t, dir, withDedup(time.Hour))
	mustAppend(t, s2, ev("p", mustQueue(t, s2, "q")))
	mustClose(t, s2)
	s2 = mustOpen(t, dir, withDedup(time.Hour))
	if dup := mustAppend(t, s2, ev("p", mustQueue(t, s2, "q"))); !dup[0] {
		t.Fatalf("id appended before a reopen was accepted again")
	}
}

func TestDedupDisabled(t *testing.T) {
	s := mustOpen(t, t.TempDir(), withDedup(0))
	q := mustQueue(t, s, "q")
	if dup := mustAppend(t, s, ev("x", q), ev("x", q)); slices.Contains(dup, true) {
		t.Fatalf("dup = %v with DedupWindow 0", dup)
	}
	if dup := mustAppend(t, s, ev("x", q)); dup[0] {
		t.Fatalf("dup with DedupWindow 0")
	}
	checkIDs(t, "queue", readQueue(t, q, 0), "x", "x", "x")
}

func TestDedupConcurrent(t *testing.T) {
	s := mustOpen(t, t.TempDir(), withDedup(time.Hour))
	q := mustQueue(t, s, "q")
	const n = 64
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []int
		start    = make(chan struct{})
	)
	for g := range n {
		wg.Go(func() {
			<-start
			// Each call also carries an event of its own, which is never a dup.
			items := []storage.AppendItem{ev(fmt.Sprintf("own-%d", g), q), ev("contested", q)}
			dup := make([]bool, 2)
			if err := s.Append(items, dup); err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			if dup[0] {
				t.Errorf("goroutine %d: own event reported as a dup", g)
			}
			if !dup[1] {
				mu.Lock()
				accepted = append(accepted, g)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(accepted) != 1 {
		t.Fatalf("contested id accepted by %d goroutines %v, want exactly 1", len(accepted), accepted)
	}
	evs := readQueue(t, q, 0)
	if len(evs) != n+1 {
		t.Fatalf("queue holds %d events, want %d", len(evs), n+1)
	}
	checkDepth(t, q, n+1)
	contested := 0
	for _, e := range evs {
		if e.ID == "contested" {
			contested++
		}
	}
	if contested != 1 {
		t.Fatalf("contested event stored %d times", contested)
	}
}

func TestDedupExpiry(t *testing.T) {
	// Badger keeps expiry times in whole seconds, so a 2s window is remembered
	// for at least one second: the immediate repeat below is always a dup.
	const window = 2 * time.Second
	s := mustOpen(t, t.TempDir(), withDedup(window))
	q := mustQueue(t, s, "q")
	start := time.Now()
	mustAppend(t, s, ev("x", q))
	if dup := mustAppend(t, s, ev("x", q)); !dup[0] {
		t.Fatalf("repeat within the window was accepted")
	}
	eventually(t, window+5*time.Second, "re-append after the dedup window", func() bool {
		return !mustAppend(t, s, ev("x", q))[0]
	})
	if el := time.Since(start); el < window-time.Second {
		t.Fatalf("dedup marker expired after %v, window %v", el, window)
	}
	checkIDs(t, "queue", readQueue(t, q, 0), "x", "x")
	checkDepth(t, q, 2)
}

// TestGroupCommit has many goroutines append with fsync at once: all succeed,
// every event is stored exactly once, and each queue holds each goroutine's
// events in the order it appended them.
func TestGroupCommit(t *testing.T) {
	const (
		goroutines = 64
		perG       = 20
		nq         = 4
	)
	var cs commits
	s := mustOpen(t, t.TempDir(), withSync, withDedup(time.Hour), cs.observe)
	qs := make([]*storage.Queue, nq)
	for i := range qs {
		qs[i] = mustQueue(t, s, fmt.Sprintf("q%d", i))
	}
	cs.reset()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range perG {
				items := []storage.AppendItem{ev(fmt.Sprintf("%d/%d", g, i), qs[g%nq])}
				if i%5 == 0 {
					// A second event, fanned out to two queues.
					items = append(items, ev(fmt.Sprintf("%d/%d/fan", g, i), qs[g%nq], qs[(g+1)%nq]))
				}
				dup := make([]bool, len(items))
				if err := s.Append(items, dup); err != nil {
					t.Errorf("goroutine %d append %d: %v", g, i, err)
					return
				}
				if slices.Contains(dup, true) {
					t.Errorf("goroutine %d append %d: unexpected dup %v", g, i, dup)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	// Each Append is one operation of exactly one commit, and 64 callers
	// at once share commits: that is the point of the writer.
	n, ops, most, _ := cs.get()
	if ops != goroutines*perG || most < 2 || most > 256 {
		t.Fatalf("%d commits reported %d operations, at most %d in one; want %d operations, shared", n, ops, most, goroutines*perG)
	}

	seen := make(map[string]int)
	for qi, q := range qs {
		evs := readQueue(t, q, 0)
		checkDepth(t, q, int64(len(evs)))
		last := make(map[int]int) // goroutine -> position of its last event in this queue
		for i, e := range evs {
			if i > 0 && e.Seq <= evs[i-1].Seq {
				t.Fatalf("queue %d: sequence numbers not increasing at %d", qi, i)
			}
			if e.Data != dataOf(e.ID) {
				t.Fatalf("event %s has data %q", e.ID, e.Data)
			}
			seen[e.ID]++
			var g, n int
			var fan string
			if _, err := fmt.Sscanf(e.ID, "%d/%d/%s", &g, &n, &fan); err != nil {
				if _, err := fmt.Sscanf(e.ID, "%d/%d", &g, &n); err != nil {
					t.Fatalf("bad id %q", e.ID)
				}
			}
			// Order per goroutine: its appends are sequential, so a later
			// append must sort after an earlier one.
			pos := 2 * n
			if fan != "" {
				pos++
			}
			if p, ok := last[g]; ok && pos <= p {
				t.Fatalf("queue %d: event %s of goroutine %d comes after its later event", qi, e.ID, g)
			}
			last[g] = pos
		}
	}
	for g := range goroutines {
		for i := range perG {
			if c := seen[fmt.Sprintf("%d/%d", g, i)]; c != 1 {
				t.Fatalf("event %d/%d read %d times, want 1", g, i, c)
			}
			if i%5 == 0 {
				if c := seen[fmt.Sprintf("%d/%d/fan", g, i)]; c != 2 {
					t.Fatalf("fan-out event %d/%d read %d times, want 2 (one per queue)", g, i, c)
				}
			}
		}
	}
}

// commits counts what Options.OnCommit reports.
type commits struct {
	mu           sync.Mutex
	n, ops, most int
	untimed      int // commits reported as taking no time
}

func (c *commits) observe(o *storage.Options) {
	o.OnCommit = func(took time.Duration, ops int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n++
		c.ops += ops
		c.most = max(c.most, ops)
		if took <= 0 {
			c.untimed++
		}
	}
}

func (c *commits) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n, c.ops, c.most, c.untimed = 0, 0, 0, 0
}

func (c *commits) get() (n, ops, most, untimed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.ops, c.most, c.untimed
}

// TestOnCommit: one call at a time, each operation (an Append, a batch
// formed, a batch acknowledged) is one commit of its own, reported once
// and timed.
func TestOnCommit(t *testing.T) {
	var cs commits
	s := mustOpen(t, t.TempDir(), withSync, cs.observe)
	q := mustQueue(t, s, "a")
	cs.reset()
	mustAppend(t, s, item("e1", "1", q))
	mustAppend(t, s, item("e2", "2", q), item("e3", "3", q))
	evs := readQueue(t, q, 0)
	b := &storage.Batch{ID: "b1", Subscriber: "a", Created: testRecv}
	for _, e := range evs {
		b.Seqs = append(b.Seqs, e.Seq)
	}
	if err := q.CreateBatch(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	if n, ops, most, untimed := cs.get(); n != 4 || ops != 4 || most != 1 || untimed != 0 {
		t.Fatalf("%d commits of %d operations (at most %d in one, %d untimed), want 4 of 1 each, timed", n, ops, most, untimed)
	}
}

func TestAppendTooLarge(t *testing.T) {
	s := mustOpen(t, t.TempDir(), func(o *storage.Options) { o.MaxRequestBytes = 64 << 10 })
	q := mustQueue(t, s, "q")
	f := func(name string, items []storage.AppendItem) {
		t.Helper()
		err := s.Append(items, make([]bool, len(items)))
		if !errors.Is(err, storage.ErrTooLarge) {
			t.Fatalf("%s: Append of %d items: got %v, want ErrTooLarge", name, len(items), err)
		}
	}
	// Too many bytes: 3 MiB of records small enough to live in the LSM
	// tree (large ones go to the value log and cost a pointer each).
	big := make([]storage.AppendItem, 20000)
	for i := range big {
		big[i] = item(fmt.Sprintf("big%d", i), `"`+string(bytes.Repeat([]byte("x"), 150))+`"`, q)
	}
	f("3 MiB of small records", big)
	// Too many entries for one transaction, though under 2 MiB: tiny events,
	// each in 50 queues.
	fan := make([]*storage.Queue, 50)
	for i := range fan {
		fan[i] = mustQueue(t, s, fmt.Sprintf("fan%d", i))
	}
	many := make([]storage.AppendItem, 500)
	for i := range many {
		many[i] = ev(fmt.Sprintf("m%d", i), fan...)
	}
	f("500 events in 50 queues", many)
	for _, fq := range fan {
		checkDepth(t, fq, 0)
	}
	checkDepth(t, q, 0)
	if evs := readQueue(t, q, 0); len(evs) != 0 {
		t.Fatalf("a rejected Append stored %d events", len(evs))
	}

	// A rejected request does not fail others committed with it.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			if err := s.Append([]storage.AppendItem{ev(fmt.Sprintf("ok%d", g), q)}, make([]bool, 1)); err != nil {
				t.Errorf("small Append next to a large one: %v", err)
			}
		})
	}
	wg.Go(func() {
		if err := s.Append(big, make([]bool, len(big))); !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("large Append: got %v, want ErrTooLarge", err)
		}
	})
	wg.Wait()
	// The store still works.
	mustAppend(t, s, ev("after", q))
	evs := readQueue(t, q, 0)
	if len(evs) != 17 || evs[16].ID != "after" {
		t.Fatalf("after ErrTooLarge the queue holds %q", ids(evs))
	}
	checkDepth(t, q, 17)
	mustBatch(t, q, "b", 17)
}

func TestClose(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	q := mustQueue(t, s, "q")
	mustAppend(t, s, ev("a", q), ev("b", q), ev("c", q))
	b := mustBatch(t, q, "b1", 2)
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	f := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrClosed) {
			t.Fatalf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
	f("Append", s.Append([]storage.AppendItem{ev("d", q)}, make([]bool, 1)))
	f("CreateBatch", q.CreateBatch(&storage.Batch{ID: "b2", Subscriber: "q", Seqs: []uint64{3}}))
	f("UpdateBatch", s.UpdateBatch(b))
	f("Ack", s.Ack(b))
	f("DeadLetter", s.DeadLetter(b))
	_, err := s.Split(b)
	f("Split", err)
	f("SetPaused", s.SetPaused("q", "why"))

	// Nothing was changed by the refused calls.
	s = mustOpen(t, dir)
	q = mustQueue(t, s, "q")
	checkIDs(t, "queue after reopen", readQueue(t, q, 0), "c")
	checkDepth(t, q, 3)
	if bs := mustBatches(t, s); len(bs) != 1 || bs["b1"] == nil {
		t.Fatalf("Batches after reopen: %v", bs)
	}
}

// TestCloseWhileAppending closes the store under concurrent appends: each
// Append either succeeds, and its events are there after a reopen, or fails
// with ErrClosed.
func TestCloseWhileAppending(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, withSync)
	q := mustQueue(t, s, "q")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []string
		first    = make(chan struct{}, 64)
	)
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d/%d", g, i)
				err := s.Append([]storage.AppendItem{ev(id, q)}, make([]bool, 1))
				if errors.Is(err, storage.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				accepted = append(accepted, id)
				mu.Unlock()
				select {
				case first <- struct{}{}:
				default:
				}
			}
		})
	}
	for range 32 {
		<-first
	}
	mustClose(t, s)
	wg.Wait()

	s = mustOpen(t, dir)
	q = mustQueue(t, s, "q")
	stored := make(map[string]bool)
	for _, e := range readQueue(t, q, 0) {
		stored[e.ID] = true
	}
	for _, id := range accepted {
		if !stored[id] {
			t.Fatalf("event %s acknowledged before Close is missing after reopen", id)
		}
	}
	if len(stored) != len(accepted) {
		t.Fatalf("%d events stored, %d acknowledged", len(stored), len(accepted))
	}
	checkDepth(t, q, int64(len(accepted)))
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	q := mustQueue(t, s, "q")
	mustAppend(t, s, ev("a", q), ev("b", q))
	if s.Full() {
		t.Fatalf("Full without a quota")
	}
	mustClose(t, s)

	s = mustOpen(t, dir, func(o *storage.Options) { o.MaxDiskBytes = 1 })
	q = mustQueue(t, s, "q")
	if s.DiskBytes() <= 0 {
		t.Fatalf("DiskBytes = %d", s.DiskBytes())
	}
	eventually(t, 5*time.Second, "Full with a 1-byte quota", s.Full)
	eventually(t, 5*time.Second, "ErrFull with a 1-byte quota", func() bool {
		err := s.Append([]storage.AppendItem{ev("c", q)}, make([]bool, 1))
		if err != nil && !errors.Is(err, storage.ErrFull) {
			t.Fatalf("Append over quota: %v", err)
		}
		return err != nil
	})
	// Reading and delivering, which free space, still work.
	checkIDs(t, "queue over quota", readQueue(t, q, 0), "a", "b")
	b := mustBatch(t, q, "b", 2)
	if _, err := readBatch(t, s, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b); err != nil {
		t.Fatalf("Ack over quota: %v", err)
	}
	checkDepth(t, q, 0)
}

// TestQueueIDs lists the subscribers with events queued, whatever their ids
// sort like, and drops one once its events are all batched.
func TestQueueIDs(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	defer mustClose(t, s)
	a, ab, b, c := mustQueue(t, s, "a"), mustQueue(t, s, "ab"), mustQueue(t, s, "b"), mustQueue(t, s, "c")
	_ = b // opened, never given an event
	mustAppend(t, s, ev("1", a, c), ev("2", a), ev("3", ab))
	want := func(ids ...string) {
		t.Helper()
		got, err := s.QueueIDs()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("QueueIDs = %q, want %q", got, ids)
		}
	}
	want("a", "ab", "c")
	mustBatch(t, c, "b_c", 1)
	want("a", "ab")
	mustBatch(t, ab, "b_ab", 1) // its entry, holding the record, stays below the head
	want("a")
}
