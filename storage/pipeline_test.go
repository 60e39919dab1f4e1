package storage

// Tests of the writer's pipeline: an operation applied while the commit
// before it is in flight reads through tx, whose snapshot misses that
// commit. Each test runs first so that its commit stays in flight while
// then is applied, and fails if tx read the snapshot alone.

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// pipe holds each commit the writer sends in flight until the test lets
// it land; while one is held, during applies operations to the next
// transaction, whose snapshot misses the held commit.
type pipe struct {
	t    *testing.T
	s    *Store
	sent chan struct{} // a commit is held
	land chan struct{} // lets one held commit land; closed: all land
	once sync.Once
	bg   sync.WaitGroup // the scaffolding operations of during
}

// newPipe holds the commits of s from now on. outcome, if set, replaces
// the outcome of the n-th commit as the writer sees it.
func newPipe(t *testing.T, s *Store, outcome func(n int, err error) error) *pipe {
	p := &pipe{t: t, s: s, sent: make(chan struct{}, 64), land: make(chan struct{})}
	var n atomic.Int64
	s.w.hold = func(err error) error {
		k := int(n.Add(1))
		p.sent <- struct{}{}
		<-p.land
		if outcome != nil {
			return outcome(k, err)
		}
		return err
	}
	t.Cleanup(func() { p.landAll(); p.bg.Wait() })
	return p
}

// await waits until a commit is held.
func (p *pipe) await() {
	p.t.Helper()
	p.wait(p.sent, "no commit was sent")
}

func (p *pipe) release() { p.land <- struct{}{} }

func (p *pipe) landAll() { p.once.Do(func() { close(p.land) }) }

// during runs ops while a commit is held, and returns once the writer has
// applied all of them to the next transaction: an op blocked in its apply
// holds the writer while they queue, and an op queued behind them in each
// lane marks them applied. Their errors arrive once that transaction lands.
func (p *pipe) during(ops ...func() error) []chan error {
	p.t.Helper()
	w := p.s.w
	inBlocker, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(unblock) }) }
	p.t.Cleanup(release) // a failed test must not leave the writer blocked
	p.bg.Go(func() {
		_ = w.do(&op{urgent: true, apply: func(*tx) error {
			close(inBlocker)
			<-unblock
			return nil
		}})
	})
	p.wait(inBlocker, "the blocking op was never applied")
	errs := make([]chan error, len(ops))
	for i, fn := range ops {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- fn() }()
		for deadline := time.Now().Add(5 * time.Second); len(w.urgent)+len(w.ingest) < i+1; {
			if time.Now().After(deadline) {
				p.t.Fatalf("operation %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	release()
	for _, urgent := range []bool{true, false} {
		applied := make(chan struct{})
		p.bg.Go(func() {
			_ = w.do(&op{urgent: urgent, apply: func(*tx) error { close(applied); return nil }})
		})
		p.wait(applied, "a marker op was never applied")
	}
	return errs
}

func (p *pipe) wait(c chan struct{}, what string) {
	p.t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		p.t.Fatal(what)
	}
}

// overFlight runs first and keeps its commit in flight while the writer
// applies then to the next transaction. outcome, if set, replaces the
// outcome of first's commit as the writer sees it. It returns the errors
// of first and of then.
func overFlight(t *testing.T, s *Store, outcome error, first func() error, then ...func() error) (error, []error) {
	t.Helper()
	p := newPipe(t, s, func(n int, err error) error {
		if n == 1 && outcome != nil {
			return outcome
		}
		return err
	})
	firstErr := make(chan error, 1)
	go func() { firstErr <- first() }()
	p.await()
	thenErr := p.during(then...)
	p.landAll()
	errs := make([]error, len(then))
	for i := range then {
		errs[i] = <-thenErr[i]
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
	if stored(t, s, batchKey("b1")) || stored(t, s, q.key(1)) {
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
	if stored(t, s, batchKey("b1")) || stored(t, s, deadKey("b1")) || stored(t, s, q.key(b.Seqs[0])) {
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
	if stored(t, s, a.key(ba.Seqs[0])) || stored(t, s, b.key(bb.Seqs[0])) {
		t.Fatal("after both acks: a queue entry is still stored")
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

// A batch found gone because the commit in flight deletes it is answered
// not found once that commit lands, and with that commit's failure if it
// fails (the batch is then still stored), never before.
func TestPipelineNotFoundWaits(t *testing.T) {
	injected := errors.New("injected commit failure")
	for _, outcome := range []error{nil, injected} {
		s := openStore(t, t.TempDir())
		q := openQueue(t, s, "q")
		appendTo(t, s, "x", q)
		b := formBatch(t, q, "b1", 1)
		errAck, errs := overFlight(t, s, outcome, func() error { return s.Ack(b) },
			func() error { return s.Ack(b) }, func() error { return s.DeadLetter(b) })
		if !errors.Is(errAck, outcome) {
			t.Errorf("outcome %v: first ack: %v", outcome, errAck)
		}
		want := ErrNotFound
		if outcome != nil {
			want = outcome
		}
		for i, err := range errs {
			if !errors.Is(err, want) {
				t.Errorf("outcome %v: op %d: %v, want %v", outcome, i, err, want)
			}
		}
	}
}

// Two commits in flight one after the other: the third transaction sees
// the second's writes, not the first's (the view is reset at each send).
func TestPipelineTwoFlights(t *testing.T) {
	s := openStore(t, t.TempDir())
	q := openQueue(t, s, "q")
	appendTo(t, s, "x", q)
	b := &Batch{ID: "b1", Subscriber: "q", Seqs: []uint64{1}, Created: 1}
	p := newPipe(t, s, nil)
	created := make(chan error, 1)
	go func() { created <- q.CreateBatch(b) }()
	p.await()
	ack1 := p.during(func() error { return s.Ack(b) })
	p.release()
	p.await() // the first ack's commit
	ack2 := p.during(func() error { return s.Ack(b) })
	p.landAll()
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if err := <-ack1[0]; err != nil {
		t.Fatalf("first ack: %v", err)
	}
	if err := <-ack2[0]; !errors.Is(err, ErrNotFound) {
		t.Fatalf("second ack: %v, want not found", err)
	}
}

// The events of a large append, committed in the background, shared by two
// queues: each acknowledgement, committed in place after it, lowers their
// count once (the view of the background commit is gone once it landed).
func TestPipelineAfterLargeAppend(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b := openQueue(t, s, "a"), openQueue(t, s, "b")
	const n = pipelineEntries/4 + 1 // 4 entries or more per event of two queues
	items := make([]AppendItem, n)
	for i := range items {
		items[i] = AppendItem{Record: []byte("e"), Queues: []*Queue{a, b}}
	}
	if err := s.Append(items, make([]bool, n)); err != nil {
		t.Fatal(err)
	}
	if s.w.background != 1 {
		t.Fatalf("%d commits sent in the background, want the append's", s.w.background)
	}
	ba, bb := formBatch(t, a, "ba", 1), formBatch(t, b, "bb", 1)
	for _, bt := range []*Batch{ba, bb} {
		if err := s.Ack(bt); err != nil {
			t.Fatal(err)
		}
	}
	if stored(t, s, eventKey(ba.Seqs[0])) || storedRefs(t, s) != n-1 {
		t.Fatalf("after both acks: record stored %t, %d reference counts, want %d", stored(t, s, eventKey(ba.Seqs[0])), storedRefs(t, s), n-1)
	}
}

// failAppliedCommit makes the writer see the next commit it sends as
// failed although Badger applied it, as Badger (v4.9.6) reports a failed
// sync of its log after the memtable took the writes.
func failAppliedCommit(s *Store) error {
	injected := errors.New("injected: log sync failed after the memtable took the writes")
	var n atomic.Int64
	s.w.hold = func(err error) error {
		if n.Add(1) == 1 && err == nil {
			return injected
		}
		return err
	}
	return injected
}

// After a commit reported failed but applied, no sequence number is
// handed out again: the next event does not overwrite the first, which
// its producer's retry finds stored (a duplicate, acknowledged).
func TestFailedCommitSeqsNotReused(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SyncWrites: true, MaxRequestBytes: 1 << 20, DedupWindow: time.Hour, Logger: zerolog.Nop()}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, s, "q")
	injected := failAppliedCommit(s)
	dup := make([]bool, 1)
	if err := appendID(s, "x", dup, q)(); !errors.Is(err, injected) {
		t.Fatalf("first append: %v, want the injected failure", err)
	}
	if err := appendID(s, "y", dup, q)(); err != nil || dup[0] {
		t.Fatalf("append y: %v, duplicate %v", err, dup[0])
	}
	if err := appendID(s, "x", dup, q)(); err != nil || !dup[0] {
		t.Fatalf("retry of x: %v, duplicate %v; want a duplicate of the stored x", err, dup[0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	var recs []string
	if err := openQueue(t, s, "q").Read(0, 10, func(_ uint64, rec []byte) bool { recs = append(recs, string(rec)); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(recs, []string{"rec-x", "rec-y"}) {
		t.Fatalf("queue after reopen: %q, want x then y", recs)
	}
}

// After a CreateBatches reported failed but applied, the queue's head is
// read back: the events it batched are not batched again (two batches
// releasing one event of two subscribers would delete its record while
// the other still needs it).
func TestFailedCreateBatchesHeadReadBack(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b := openQueue(t, s, "a"), openQueue(t, s, "b")
	appendTo(t, s, "shared", a, b)
	injected := failAppliedCommit(s)
	if err := a.CreateBatch(&Batch{ID: "b1", Subscriber: "a", Seqs: []uint64{1}, Created: 1}); !errors.Is(err, injected) {
		t.Fatalf("CreateBatch b1: %v, want the injected failure", err)
	}
	n := 0
	if err := a.Read(0, 10, func(uint64, []byte) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("queue a reads %d events after b1 was stored", n)
	}
	if err := a.CreateBatch(&Batch{ID: "b2", Subscriber: "a", Seqs: []uint64{1}, Created: 1}); err == nil {
		t.Fatal("the event of b1 was batched again")
	}
	bb := formBatch(t, b, "bb", 1)
	pending, err := s.Batches()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pending {
		if p.ID == "b1" {
			if err := s.Ack(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.ReadBatch(bb, func(uint64, []byte) error { return nil }); err != nil {
		t.Fatalf("b's batch after a's was delivered: %v", err)
	}
}

// A queue first opened while an Ack of its batch is being committed counts
// the batch's events once: its count and the Ack's change of depth do not
// overlap.
func TestQueueOpenedDuringAck(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := openQueue(t, s, "a")
	appendTo(t, s, "e1", a)
	appendTo(t, s, "e2", a)
	b1 := formBatch(t, a, "b1", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.w.hold = func(err error) error { once.Do(func() { close(entered); <-release }); return err }
	acked := make(chan error, 1)
	go func() { acked <- s.Ack(b1) }()
	<-entered // the Ack's commit is in flight
	opened := make(chan *Queue, 1)
	go func() { q, _ := s.Queue("a"); opened <- q }() // the first open since the restart
	runtime.Gosched()                                 // let it start counting, as it did before it waited for the writer
	close(release)
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	q := <-opened
	if q == nil {
		t.Fatal("cannot open queue a")
	}
	if d := q.Depth(); d != 1 {
		t.Fatalf("depth %d, want 1 (one event queued, none batched)", d)
	}
}
