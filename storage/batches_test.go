package storage_test

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/storage"
)

func TestCreateBatch(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	q := mustQueue(t, s, "q")
	for i := range 10 {
		mustAppend(t, s, ev(fmt.Sprintf("e%d", i), q))
	}
	if err := q.CreateBatch(&storage.Batch{ID: "empty", Subscriber: "q"}); err == nil {
		t.Fatalf("CreateBatch of an empty batch succeeded")
	}
	all := readQueue(t, q, 0)
	b := mustBatch(t, q, "b1", 6)

	// Batched events leave the queue, whatever cursor a reader passes.
	checkIDs(t, "Read(0) after CreateBatch", readQueue(t, q, 0), "e6", "e7", "e8", "e9")
	checkIDs(t, "Read(seq of e2)", readQueue(t, q, all[2].Seq), "e6", "e7", "e8", "e9")
	checkIDs(t, "Read(seq of e7)", readQueue(t, q, all[7].Seq), "e8", "e9")
	// They still count until acked.
	checkDepth(t, q, 10)
	bs := mustBatches(t, s)
	if len(bs) != 1 || !reflect.DeepEqual(bs["b1"], b) {
		t.Fatalf("Batches = %v, want only %+v", bs, b)
	}
	evs, err := readBatch(t, s, b)
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "ReadBatch", evs, "e0", "e1", "e2", "e3", "e4", "e5")

	b2 := mustBatch(t, q, "b2", 3)
	checkIDs(t, "Read after a second batch", readQueue(t, q, 0), "e9")
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, q, 4)
	if bs := mustBatches(t, s); len(bs) != 1 || bs["b2"] == nil {
		t.Fatalf("Batches after Ack = %v, want only b2", bs)
	}
	if err := s.Ack(b2); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, q, 1)
	if bs := mustBatches(t, s); len(bs) != 0 {
		t.Fatalf("Batches after acking all = %v", bs)
	}
	// New events after the head are read as usual.
	mustAppend(t, s, ev("e10", q))
	checkIDs(t, "Read after new events", readQueue(t, q, 0), "e9", "e10")
}

func TestUpdateBatch(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	q := mustQueue(t, s, "q")
	mustAppend(t, s, ev("a", q), ev("b", q), ev("c", q))
	b := mustBatch(t, q, "b1", 3)
	b.Attempts = 3
	b.FirstAttempt = 1764756000000000001
	b.LastAttempt = 1764756000000000002
	b.NextAttempt = 1764756000000000003
	b.LastStatus = 503
	b.LastError = "HTTP 503: \"upstream\" unavailable"
	if err := s.UpdateBatch(b); err != nil {
		t.Fatal(err)
	}
	if got := mustBatches(t, s)["b1"]; !reflect.DeepEqual(got, b) {
		t.Fatalf("Batches after UpdateBatch = %+v, want %+v", got, b)
	}
	mustClose(t, s)

	s = mustOpen(t, dir)
	q = mustQueue(t, s, "q")
	if got := mustBatches(t, s)["b1"]; !reflect.DeepEqual(got, b) {
		t.Fatalf("Batches after reopen = %+v, want %+v", got, b)
	}
	checkDepth(t, q, 3)
	if evs := readQueue(t, q, 0); len(evs) != 0 {
		t.Fatalf("batched events read from the queue after reopen: %v", ids(evs))
	}
}

func TestDeadLetters(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	for i := range 8 {
		mustAppend(t, s, ev(fmt.Sprintf("a%d", i), a), ev(fmt.Sprintf("b%d", i), b))
	}
	// Batch ids sort in this order: a1 < a2 < a3 < b1 < b2.
	var bas, bbs []*storage.Batch
	for i := range 3 {
		bas = append(bas, mustBatch(t, a, fmt.Sprintf("id-a%d", i+1), 2))
	}
	for i := range 2 {
		bbs = append(bbs, mustBatch(t, b, fmt.Sprintf("id-b%d", i+1), 3))
	}
	checkDepth(t, a, 8)
	checkDepth(t, b, 8)
	for i, x := range append(slices.Clone(bas), bbs...) {
		x.Attempts = 5 + i
		x.LastStatus = 500
		x.LastError = "boom"
		x.FailedAt = 1764756000000000000 + int64(i)
		if err := s.DeadLetter(x); err != nil {
			t.Fatalf("DeadLetter %s: %v", x.ID, err)
		}
	}
	checkDepth(t, a, 2)
	checkDepth(t, b, 2)
	if bs := mustBatches(t, s); len(bs) != 0 {
		t.Fatalf("dead letters still among Batches: %v", slices.Collect(maps.Keys(bs)))
	}

	_, err := s.GetDeadLetter("nope")
	checkNotFound(t, "GetDeadLetter of an unknown id", err)
	dl, err := s.GetDeadLetter("id-a2")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dl, bas[1]) {
		t.Fatalf("GetDeadLetter = %+v, want %+v", dl, bas[1])
	}
	evs, err := readBatch(t, s, dl)
	if err != nil {
		t.Fatalf("ReadBatch of a dead letter: %v", err)
	}
	checkIDs(t, "dead letter", evs, "a2", "a3")

	f := func(sub string, limit int, want ...string) {
		t.Helper()
		after := ""
		if strings.HasPrefix(sub, ">") { // >ID,SUB: DeadLettersAfter(SUB, ID)
			after, sub, _ = strings.Cut(sub[1:], ",")
		}
		dls, err := s.DeadLettersAfter(sub, after, limit)
		if err != nil {
			t.Fatalf("DeadLettersAfter(%q, %q, %d): %v", sub, after, limit, err)
		}
		var got []string
		for _, d := range dls {
			got = append(got, d.ID)
			if sub != "" && d.Subscriber != sub {
				t.Fatalf("DeadLetters(%q) returned %s of %s", sub, d.ID, d.Subscriber)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("DeadLetters(%q, %d) = %q, want %q", sub, limit, got, want)
		}
	}
	f("", 0, "id-a1", "id-a2", "id-a3", "id-b1", "id-b2")
	f("", 2, "id-a1", "id-a2")
	f("", 100, "id-a1", "id-a2", "id-a3", "id-b1", "id-b2")
	f("a", 0, "id-a1", "id-a2", "id-a3")
	f("b", 0, "id-b1", "id-b2")
	f("b", 1, "id-b1")
	f("a", 2, "id-a1", "id-a2")
	f("c", 0)
	// Pages: from the id after the last one seen (which need not exist).
	f(">id-a1,", 2, "id-a2", "id-a3")
	f(">id-a3,a", 0)
	f(">id-a2,b", 0, "id-b1", "id-b2")
	f(">id-a25,", 1, "id-a3")
	f(">id-b2,", 0)
	checkCounts := func(want map[string]int) {
		t.Helper()
		got, err := s.DeadLetterCounts()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("DeadLetterCounts = %v, want %v", got, want)
		}
	}
	checkCounts(map[string]int{"a": 3, "b": 2})

	// Dead letters survive a reopen.
	mustClose(t, s)
	s = mustOpen(t, dir)
	a, b = mustQueue(t, s, "a"), mustQueue(t, s, "b")
	checkDepth(t, a, 2)
	checkDepth(t, b, 2)
	f("", 0, "id-a1", "id-a2", "id-a3", "id-b1", "id-b2")
	checkCounts(map[string]int{"a": 3, "b": 2})

	// Replay: same id and contents, fresh delivery state (its age counted
	// from the replay), pending again.
	before := time.Now().UnixNano()
	r, err := s.Replay("id-a2")
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if r.Created < before || r.Created < bas[1].Created {
		t.Fatalf("replayed batch created at %d, want from the replay on (%d)", r.Created, before)
	}
	want := &storage.Batch{ID: "id-a2", Subscriber: "a", Seqs: bas[1].Seqs, Created: r.Created}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("Replay returned %+v, want %+v", r, want)
	}
	if got := mustBatches(t, s)["id-a2"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("replayed batch in Batches = %+v, want %+v", got, want)
	}
	_, err = s.GetDeadLetter("id-a2")
	checkNotFound(t, "GetDeadLetter after Replay", err)
	_, err = s.Replay("id-a2")
	checkNotFound(t, "second Replay", err)
	_, err = s.Replay("nope")
	checkNotFound(t, "Replay of an unknown id", err)
	checkDepth(t, a, 4)
	checkCounts(map[string]int{"a": 2, "b": 2})
	evs, err = readBatch(t, s, r)
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "replayed batch", evs, "a2", "a3")
	if err := s.Ack(r); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, a, 2)

	// Drop: gone for good, events released.
	dropped, err := s.GetDeadLetter("id-b1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DropDeadLetter("id-b1"); err != nil {
		t.Fatalf("DropDeadLetter: %v", err)
	}
	_, err = s.GetDeadLetter("id-b1")
	checkNotFound(t, "GetDeadLetter after DropDeadLetter", err)
	checkNotFound(t, "second DropDeadLetter", s.DropDeadLetter("id-b1"))
	checkNotFound(t, "DropDeadLetter of an unknown id", s.DropDeadLetter("nope"))
	if _, err := readBatch(t, s, dropped); err == nil {
		t.Fatalf("ReadBatch of a dropped dead letter succeeded")
	}
	checkDepth(t, b, 2)
	checkCounts(map[string]int{"a": 2, "b": 1})
	f("", 0, "id-a1", "id-a3", "id-b2")
}

func TestSplit(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	q := mustQueue(t, s, "q")
	mustAppend(t, s, ev("a", q), ev("b", q), ev("c", q), ev("d", q), ev("e", q), ev("f", q))
	b := mustBatch(t, q, "b_1", 5)
	b.Attempts, b.LastStatus = 2, 413
	if err := s.UpdateBatch(b); err != nil {
		t.Fatal(err)
	}
	halves, err := s.Split(b)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	want := [2]*storage.Batch{
		{ID: "b_1.1", Subscriber: "q", Seqs: b.Seqs[:2], Created: b.Created},
		{ID: "b_1.2", Subscriber: "q", Seqs: b.Seqs[2:], Created: b.Created},
	}
	if !reflect.DeepEqual(halves, want) {
		t.Fatalf("Split = %+v, %+v; want %+v, %+v", halves[0], halves[1], want[0], want[1])
	}
	check := func() {
		t.Helper()
		bs := mustBatches(t, s)
		if len(bs) != 2 || !reflect.DeepEqual(bs["b_1.1"], want[0]) || !reflect.DeepEqual(bs["b_1.2"], want[1]) {
			t.Fatalf("Batches after Split = %v, want only the halves", slices.Collect(maps.Keys(bs)))
		}
		checkDepth(t, q, 6)
		checkIDs(t, "queue", readQueue(t, q, 0), "f")
	}
	check()
	for i, wantIDs := range [][]string{{"a", "b"}, {"c", "d", "e"}} {
		evs, err := readBatch(t, s, halves[i])
		if err != nil {
			t.Fatal(err)
		}
		checkIDs(t, halves[i].ID, evs, wantIDs...)
	}
	mustClose(t, s)
	s = mustOpen(t, dir)
	q = mustQueue(t, s, "q")
	check()

	// A half splits again; a single event does not.
	quarters, err := s.Split(halves[1])
	if err != nil {
		t.Fatal(err)
	}
	if quarters[0].ID != "b_1.2.1" || len(quarters[0].Seqs) != 1 || quarters[1].ID != "b_1.2.2" || len(quarters[1].Seqs) != 2 {
		t.Fatalf("Split of a half = %+v, %+v", quarters[0], quarters[1])
	}
	if _, err := s.Split(quarters[0]); err == nil {
		t.Fatalf("Split of a one-event batch succeeded")
	}
	for _, x := range []*storage.Batch{halves[0], quarters[0], quarters[1]} {
		if err := s.Ack(x); err != nil {
			t.Fatal(err)
		}
	}
	checkDepth(t, q, 1)
	if bs := mustBatches(t, s); len(bs) != 0 {
		t.Fatalf("Batches after acking every part: %v", slices.Collect(maps.Keys(bs)))
	}
}

func TestPaused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	check := func(want map[string]string) {
		t.Helper()
		got, err := s.Paused()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("Paused = %v, want %v", got, want)
		}
	}
	check(map[string]string{})
	for _, p := range [][2]string{{"a", "HTTP 410 Gone"}, {"b", "manual"}, {"c", "x"}, {"a", "HTTP 401"}, {"c", ""}, {"d", ""}} {
		if err := s.SetPaused(p[0], p[1]); err != nil {
			t.Fatalf("SetPaused(%q, %q): %v", p[0], p[1], err)
		}
	}
	want := map[string]string{"a": "HTTP 401", "b": "manual"}
	check(want)
	mustClose(t, s)
	s = mustOpen(t, dir)
	check(want)
	if err := s.SetPaused("a", ""); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = mustOpen(t, dir)
	check(map[string]string{"b": "manual"})
}

// TestDepthAcrossReopen checks that a reopened queue counts its queued
// events and those of its stored batches, but not dead letters.
func TestDepthAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	for i := range 10 {
		its := []storage.AppendItem{ev(fmt.Sprintf("a%d", i), a)}
		if i%2 == 0 {
			its = append(its, ev(fmt.Sprintf("ab%d", i), a, b))
		}
		mustAppend(t, s, its...)
	}
	// a: 15 events, b: 5.
	b1 := mustBatch(t, a, "a-1", 4)
	b2 := mustBatch(t, a, "a-2", 3)
	b3 := mustBatch(t, a, "a-3", 2)
	bb := mustBatch(t, b, "b-1", 2)
	if err := s.DeadLetter(b2); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b3); err != nil {
		t.Fatal(err)
	}
	wantA, wantB := int64(15-3-2), int64(5)
	checkDepth(t, a, wantA)
	checkDepth(t, b, wantB)
	mustClose(t, s)

	s = mustOpen(t, dir)
	// Open b first: the order queues are opened in does not matter.
	b = mustQueue(t, s, "b")
	a = mustQueue(t, s, "a")
	checkDepth(t, a, wantA)
	checkDepth(t, b, wantB)
	if n := len(readQueue(t, a, 0)); n != 15-4-3-2 {
		t.Fatalf("queue a holds %d unbatched events after reopen, want %d", n, 15-4-3-2)
	}
	// ab4 was acked in a's batch a-3 and is still queued for b.
	checkIDs(t, "queue b after reopen", readQueue(t, b, 0), "ab4", "ab6", "ab8")
	if _, err := s.Replay(b2.ID); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, a, wantA+3)
	for _, x := range []*storage.Batch{b1, b2} {
		if err := s.Ack(x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(bb); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, a, 15-4-3-2)
	checkDepth(t, b, 3)
	mustClose(t, s)
	s = mustOpen(t, dir)
	checkDepth(t, mustQueue(t, s, "a"), 15-4-3-2)
	checkDepth(t, mustQueue(t, s, "b"), 3)
}

// TestConcurrentAcksFanOut acks the batches of two subscribers sharing every
// event at once, so that releases of one event often share a transaction:
// afterwards nothing is counted and no record is left.
func TestConcurrentAcksFanOut(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	for i := range 200 {
		mustAppend(t, s, ev(fmt.Sprintf("e%d", i), a, b))
	}
	var bs []*storage.Batch
	for i := range 20 {
		bs = append(bs, mustBatch(t, a, fmt.Sprintf("a%02d", i), 10), mustBatch(t, b, fmt.Sprintf("b%02d", i), 10))
	}
	for i := 0; i < len(bs); i += 2 {
		if !slices.Equal(bs[i].Seqs, bs[i+1].Seqs) {
			t.Fatalf("batches %s and %s hold different events", bs[i].ID, bs[i+1].ID)
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, x := range bs {
		wg.Go(func() {
			<-start
			if err := s.Ack(x); err != nil {
				t.Errorf("Ack %s: %v", x.ID, err)
			}
		})
	}
	close(start)
	wg.Wait()
	checkDepth(t, a, 0)
	checkDepth(t, b, 0)
	for _, x := range bs {
		for _, seq := range x.Seqs {
			if _, err := readBatch(t, s, &storage.Batch{ID: x.ID, Seqs: []uint64{seq}}); err == nil {
				t.Fatalf("event %d is still stored after both of its batches were acked", seq)
			}
		}
	}
	if left := mustBatches(t, s); len(left) != 0 {
		t.Fatalf("batches left: %v", slices.Collect(maps.Keys(left)))
	}
}
