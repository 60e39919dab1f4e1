package storage

// Tests of the writer's pipeline: an operation applied while the commit
// before it is in flight reads through tx, whose snapshot misses that
// commit. Each test runs first so that its commit stays in flight while
// then is applied, and fails if tx read the snapshot alone.

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// overFlight runs first and keeps its commit in flight while the writer
// applies then to the next transaction, whose snapshot misses first's
// commit: an op blocked in its apply holds the writer while then queues;
// the commit lands once then is applied.
// outcome, if set, replaces the outcome of first's commit as the writer
// sees it. It returns the errors of first and of then.
func overFlight(t *testing.T, s *Store, outcome error, first func() error, then ...func() error) (error, []error) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	s.w.hold = func(err error) error {
		if !held.CompareAndSwap(false, true) {
			return err
		}
		close(entered)
		<-gate
		if outcome != nil {
			return outcome
		}
		return err
	}
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)

	firstErr := make(chan error, 1)
	go func() { firstErr <- first() }()
	<-entered

	inBlocker, unblock := make(chan struct{}), make(chan struct{})
	blockerErr := make(chan error, 1)
	go func() {
		blockerErr <- s.w.do(&op{urgent: true, apply: func(*tx) error {
			close(inBlocker)
			<-unblock
			return nil
		}})
	}()
	<-inBlocker

	thenErr := make([]chan error, len(then))
	for i, fn := range then {
		thenErr[i] = make(chan error, 1)
		go func() { thenErr[i] <- fn() }()
		for deadline := time.Now().Add(5 * time.Second); len(s.w.urgent)+len(s.w.ingest) < i+1; {
			if time.Now().After(deadline) {
				t.Fatalf("operation %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Once an op queued behind them in each lane is applied, so are they.
	close(unblock)
	var markers sync.WaitGroup
	for _, urgent := range []bool{true, false} {
		applied := make(chan struct{})
		markers.Go(func() {
			_ = s.w.do(&op{urgent: urgent, apply: func(*tx) error { close(applied); return nil }})
		})
		<-applied
	}
	release()
	markers.Wait()

	errs := make([]error, len(then))
	for i := range then {
		errs[i] = <-thenErr[i]
	}
	if err := <-blockerErr; err != nil && outcome == nil {
		t.Fatalf("the blocking op failed: %v", err)
	}
	return <-firstErr, errs
}

func openDedupStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), MaxRequestBytes: 1 << 20, DedupWindow: time.Hour, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func appendID(s *Store, id string, dup []bool, qs ...*Queue) func() error {
	return func() error {
		return s.Append([]AppendItem{{Record: []byte("rec-" + id), ID: []byte(id), Queues: qs}}, dup)
	}
}

func stored(t *testing.T, s *Store, key []byte) bool {
	t.Helper()
	err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(key); return err })
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// A repeated id is a duplicate while the first is still being committed.
func TestPipelineDedup(t *testing.T) {
	s := openDedupStore(t)
	q := openQueue(t, s, "q")
	dup1, dup2 := make([]bool, 1), make([]bool, 1)
	err1, errs := overFlight(t, s, nil, appendID(s, "x", dup1, q), appendID(s, "x", dup2, q))
	if err1 != nil || errs[0] != nil {
		t.Fatal(err1, errs[0])
	}
	if dup1[0] || !dup2[0] {
		t.Fatalf("dup = %v then %v, want false then true", dup1[0], dup2[0])
	}
	n := 0
	if err := q.Read(0, 10, func(uint64, []byte) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 1 || q.Depth() != 1 {
		t.Fatalf("%d events queued (depth %d), want 1", n, q.Depth())
	}
}

// A batch can be acknowledged while its creation is being committed, and
// only once while its acknowledgement is.
func TestPipelineBatchLifecycle(t *testing.T) {
	s := openStore(t, t.TempDir())
	q := openQueue(t, s, "q")
	appendTo(t, s, "x", q)
	b := &Batch{ID: "b1", Subscriber: "q", Seqs: []uint64{1}, Created: 1}
	errCreate, errs := overFlight(t, s, nil, func() error { return q.CreateBatch(b) }, func() error { return s.Ack(b) })
	if errCreate != nil || errs[0] != nil {
		t.Fatalf("create: %v; ack: %v", errCreate, errs[0])
	}
	if stored(t, s, batchKey("b1")) || stored(t, s, eventKey(1)) {
		t.Fatal("the acknowledged batch or its event is still stored")
	}

	appendTo(t, s, "y", q)
	b2 := formBatch(t, q, "b2", 1)
	errAck, errs := overFlight(t, s, nil, func() error { return s.Ack(b2) }, func() error { return s.Ack(b2) })
	if errAck != nil || !errors.Is(errs[0], ErrNotFound) {
		t.Fatalf("first ack: %v; second ack: %v, want not found", errAck, errs[0])
	}
}

// A dead letter can be replayed while it is being dead-lettered, and then
// acknowledged: the transaction's own writes come before those in flight.
func TestPipelineReplay(t *testing.T) {
	s := openStore(t, t.TempDir())
	q := openQueue(t, s, "q")
	appendTo(t, s, "x", q)
	b := formBatch(t, q, "b1", 1)
	errDead, errs := overFlight(t, s, nil, func() error { return s.DeadLetter(b) },
		func() error { _, err := s.Replay("b1"); return err },
		func() error { return s.Ack(b) })
	if errDead != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("dead letter: %v; replay: %v; ack: %v", errDead, errs[0], errs[1])
	}
	if stored(t, s, batchKey("b1")) || stored(t, s, deadKey("b1")) || stored(t, s, eventKey(b.Seqs[0])) {
		t.Fatal("the replayed and acknowledged batch or its event is still stored")
	}
}

// The two acknowledgements of an event of two subscribers, one in flight
// while the other is applied, free its record and reference count.
func TestPipelineSharedRelease(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b := openQueue(t, s, "a"), openQueue(t, s, "b")
	appendTo(t, s, "ab", a, b)
	ba, bb := formBatch(t, a, "ba", 1), formBatch(t, b, "bb", 1)
	errA, errs := overFlight(t, s, nil, func() error { return s.Ack(ba) }, func() error { return s.Ack(bb) })
	if errA != nil || errs[0] != nil {
		t.Fatal(errA, errs[0])
	}
	if stored(t, s, eventKey(ba.Seqs[0])) || storedRefs(t, s) != 0 {
		t.Fatalf("after both acks: record stored %t, %d reference counts", stored(t, s, eventKey(ba.Seqs[0])), storedRefs(t, s))
	}
}

// When the commit in flight fails, what was built on it fails too, and is
// stored once retried.
func TestPipelineFailedFlight(t *testing.T) {
	s := openDedupStore(t)
	q := openQueue(t, s, "q")
	injected := errors.New("injected commit failure")
	dup := make([]bool, 1)
	errFirst, errs := overFlight(t, s, injected, appendID(s, "x", make([]bool, 1), q), appendID(s, "y", dup, q))
	if !errors.Is(errFirst, injected) || !errors.Is(errs[0], injected) {
		t.Fatalf("first: %v; built on it: %v; want both %v", errFirst, errs[0], injected)
	}
	if err := appendID(s, "y", dup, q)(); err != nil || dup[0] {
		t.Fatalf("retry: %v, dup %t", err, dup[0])
	}
	var recs []string
	if err := q.Read(0, 10, func(_ uint64, rec []byte) bool { recs = append(recs, string(rec)); return true }); err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[len(recs)-1] != "rec-y" {
		t.Fatalf("queue holds %q, want rec-y last", recs)
	}
}
