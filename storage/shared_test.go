package storage

// Tests of w.shared, the upper bound of stored reference counts at which
// releaseLocked deletes records without looking one up: if it ever read 0
// while a count is stored, a record another queue holds would be deleted.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxRequestBytes: 1 << 20, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openQueue(t *testing.T, s *Store, id string) *Queue {
	t.Helper()
	q, err := s.Queue(id)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func appendTo(t *testing.T, s *Store, rec string, qs ...*Queue) {
	t.Helper()
	if err := s.Append([]AppendItem{{Record: []byte(rec), Queues: qs}}, make([]bool, 1)); err != nil {
		t.Fatal(err)
	}
}

// formBatch stores a batch of the n oldest queued events of q.
func formBatch(t *testing.T, q *Queue, id string, n int) *Batch {
	t.Helper()
	b := &Batch{ID: id, Subscriber: q.ID(), Created: 1}
	if err := q.Read(0, n, func(seq uint64, _ []byte) bool { b.Seqs = append(b.Seqs, seq); return true }); err != nil {
		t.Fatal(err)
	}
	if len(b.Seqs) != n {
		t.Fatalf("queue %s holds %d events, want %d", q.ID(), len(b.Seqs), n)
	}
	if err := q.CreateBatch(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustReadBatch(t *testing.T, s *Store, b *Batch) {
	t.Helper()
	if err := s.ReadBatch(b, func(uint64, []byte) error { return nil }); err != nil {
		t.Fatalf("batch %s of %s lost its events: %v", b.ID, b.Subscriber, err)
	}
}

// writerShared reads w.shared in the writer goroutine.
func writerShared(t *testing.T, s *Store) int64 {
	t.Helper()
	n, _ := writerCounts(t, s)
	return n
}

// writerCounts reads w.shared and w.records in the writer goroutine.
func writerCounts(t *testing.T, s *Store) (shared, records int64) {
	t.Helper()
	if err := s.w.do(&op{urgent: true, alone: func() error { shared, records = s.w.shared, s.w.records; return nil }}); err != nil {
		t.Fatal(err)
	}
	return shared, records
}

// storedRefs counts the reference counts stored.
func storedRefs(t *testing.T, s *Store) int64 {
	t.Helper()
	n, err := s.countShared()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An event of three subscribers: after two acks the third still reads it.
// Fails if lowering a count (not deleting it) counted as freeing one.
func TestSharedThreeWay(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b, c := openQueue(t, s, "a"), openQueue(t, s, "b"), openQueue(t, s, "c")
	appendTo(t, s, "abc", a, b, c)
	for _, q := range []*Queue{a, b} {
		if err := s.Ack(formBatch(t, q, "b"+q.ID(), 1)); err != nil {
			t.Fatal(err)
		}
	}
	mustReadBatch(t, s, formBatch(t, c, "bc", 1))
}

// Two shared events at a reopen are counted as two, not "some".
// Fails if Open only noted whether some count exists.
func TestSharedCountedAtReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a, b := openQueue(t, s, "a"), openQueue(t, s, "b")
	appendTo(t, s, "x", a, b)
	appendTo(t, s, "y", a, b)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	a, b = openQueue(t, s, "a"), openQueue(t, s, "b")
	if got := writerShared(t, s); got != 2 {
		t.Fatalf("shared = %d after reopen, want 2", got)
	}
	for i := range 2 {
		if err := s.Ack(formBatch(t, a, fmt.Sprint("a", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	mustReadBatch(t, s, formBatch(t, b, "b", 2))
}

// holdWriter makes the writer run an alone op that blocks until the returned
// func is called, so that the next ops submitted share one transaction.
func holdWriter(t *testing.T, s *Store) (release func()) {
	started, block := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.w.do(&op{urgent: true, alone: func() error { close(started); <-block; return nil }})
	}()
	<-started
	var once sync.Once
	release = func() { once.Do(func() { close(block) }) }
	t.Cleanup(release) // before the store's Close, should the test fail first
	return release
}

func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(s.w.urgent) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d ops queued, want %d", len(s.w.urgent), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// failingAck runs s.Ack(x) in the same transaction as an op whose apply (or
// commit) fails, so the ack is answered with the failure; then the ack is
// retried, and the other subscriber's batch must still be readable.
func failingAck(t *testing.T, poison func(*tx) error) {
	s := openStore(t, t.TempDir())
	a, b := openQueue(t, s, "a"), openQueue(t, s, "b")
	appendTo(t, s, "x", a, b)
	ba, bb := formBatch(t, a, "ba", 1), formBatch(t, b, "bb", 1)

	release := holdWriter(t, s)
	ackErr, poisonErr := make(chan error, 1), make(chan error, 1)
	go func() { ackErr <- s.Ack(ba) }()
	waitQueued(t, s, 1)
	go func() { poisonErr <- s.w.do(&op{urgent: true, count: 1, apply: poison}) }()
	waitQueued(t, s, 2)
	release()
	if err := <-ackErr; err == nil {
		t.Fatal("the ack sharing the failed transaction succeeded: the test did not group them")
	}
	<-poisonErr
	sh, rc := writerCounts(t, s)
	if refs := storedRefs(t, s); sh < refs {
		t.Fatalf("shared = %d below the %d reference counts stored", sh, refs)
	}
	if recs, err := s.countKeys(kindEvent); err != nil || rc < recs {
		t.Fatalf("records = %d below the %d records stored apart (%v)", rc, recs, err)
	}
	if err := s.Ack(ba); err != nil { // persist retries it
		t.Fatal(err)
	}
	mustReadBatch(t, s, bb)
}

// Fails if shared were lowered before the commit, or for the operations of a
// transaction dropped because a later operation's apply failed.
func TestSharedFailedApply(t *testing.T) {
	failingAck(t, func(*tx) error { return errors.New("injected apply failure") })
}

// Fails if shared were lowered although the commit failed.
func TestSharedFailedCommit(t *testing.T) {
	failingAck(t, func(wt *tx) error { wt.txn.Discard(); return nil })
}

// A random walk through every operation touching events (1..3 subscribers
// per event, batches, acks, dead letters, replays, drops, splits, reopens),
// checking after each step the layout's invariants and the writer's bounds
// (checkRefs), and that every stored batch and dead letter can be read.
func TestSharedRandomWalk(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomWalk(t, seed) })
	}
}

func randomWalk(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 97))
	dir := t.TempDir()
	s := openStore(t, dir)
	subs := []string{"a", "b", "c"}
	qs := func() map[string]*Queue {
		m := map[string]*Queue{}
		for _, id := range subs {
			m[id] = openQueue(t, s, id)
		}
		return m
	}
	q := qs()
	nb, drains := 0, 0
	defer func() {
		if !t.Failed() && drains == 0 {
			t.Errorf("the walk never drained the store: the fast path went untested")
		}
	}()
	for step := range 400 {
		switch k := rng.IntN(100); {
		case k < 35: // append 1..4 events, each to 1..3 subscribers
			var items []AppendItem
			for range 1 + rng.IntN(4) {
				perm := rng.Perm(3)[:1+rng.IntN(3)]
				var to []*Queue
				for _, i := range perm {
					to = append(to, q[subs[i]])
				}
				items = append(items, AppendItem{Record: []byte(fmt.Sprint("rec", step)), Queues: to})
			}
			if err := s.Append(items, make([]bool, len(items))); err != nil {
				t.Fatal(err)
			}
		case k < 55: // form a batch
			qq := q[subs[rng.IntN(3)]]
			var seqs []uint64
			_ = qq.Read(0, 1+rng.IntN(4), func(seq uint64, _ []byte) bool { seqs = append(seqs, seq); return true })
			if len(seqs) == 0 {
				continue
			}
			nb++
			if err := qq.CreateBatch(&Batch{ID: fmt.Sprintf("b%04d", nb), Subscriber: qq.ID(), Seqs: seqs}); err != nil {
				t.Fatal(err)
			}
		case k < 75: // ack, dead-letter or split a batch
			bs, err := s.Batches()
			if err != nil || len(bs) == 0 {
				continue
			}
			b := bs[rng.IntN(len(bs))]
			switch rng.IntN(4) {
			case 0, 1:
				err = s.Ack(b)
			case 2:
				err = s.DeadLetter(b)
			case 3:
				if len(b.Seqs) > 1 {
					_, err = s.Split(b)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
		case k < 85: // replay or drop a dead letter
			dls, err := s.DeadLetters("", 0)
			if err != nil || len(dls) == 0 {
				continue
			}
			d := dls[rng.IntN(len(dls))]
			if rng.IntN(2) == 0 {
				_, err = s.Replay(d.ID)
			} else {
				err = s.DropDeadLetter(d.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
		case k < 90: // concurrent acks of everything pending
			bs, _ := s.Batches()
			errc := make(chan error, len(bs))
			for _, b := range bs {
				go func() { errc <- s.Ack(b) }()
			}
			for range bs {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
		case k < 94: // deliver everything: nothing is shared any more
			drainAll(t, s, q)
			if sh, rc := writerCounts(t, s); sh != 0 || rc != 0 {
				t.Fatalf("step %d: shared = %d, records = %d with nothing stored", step, sh, rc)
			}
			drains++
		default: // reopen
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			q = qs()
		}
		// Nothing fails in the walk, so the writer's bounds stay exact.
		checkRefs(t, s)
		bs, _ := s.Batches()
		dls, _ := s.DeadLetters("", 0)
		for _, b := range slices.Concat(bs, dls) {
			mustReadBatch(t, s, b)
		}
		for _, qq := range q {
			if err := qq.Read(0, 1<<20, func(uint64, []byte) bool { return true }); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
	}
}

// drainAll reads and drops every dead letter, reads and acknowledges every
// batch, and batches and acknowledges every queued event, until the store
// holds nothing.
func drainAll(t *testing.T, s *Store, qs map[string]*Queue) {
	t.Helper()
	dls, err := s.DeadLetters("", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dls {
		mustReadBatch(t, s, d)
		if err := s.DropDeadLetter(d.ID); err != nil {
			t.Fatal(err)
		}
	}
	for n := 0; ; n++ {
		for _, q := range qs {
			var seqs []uint64
			if err := q.Read(0, 100, func(seq uint64, _ []byte) bool { seqs = append(seqs, seq); return true }); err != nil {
				t.Fatal(err)
			}
			if len(seqs) > 0 {
				if err := q.CreateBatch(&Batch{ID: fmt.Sprintf("drain-%s-%d-%d", q.ID(), seqs[0], n), Subscriber: q.ID(), Seqs: seqs}); err != nil {
					t.Fatal(err)
				}
			}
		}
		bs, err := s.Batches()
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 0 {
			return
		}
		for _, b := range bs {
			mustReadBatch(t, s, b)
			if err := s.Ack(b); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// ---- crash test: kill -9 a process fanning events out and releasing them,
// reopen, and check that every reference count equals its holders.

const sharedCrashEnv = "HOOKBATCH_SHARED_CRASH_DIR"

func TestSharedCrashHelper(t *testing.T) {
	dir := os.Getenv(sharedCrashEnv)
	if dir == "" {
		t.Skip("helper process of TestSharedCrashFanOut")
	}
	s, err := Open(Options{Dir: dir, MaxRequestBytes: 1 << 20, Logger: zerolog.Nop(), SyncWrites: os.Getenv("HOOKBATCH_SHARED_CRASH_SYNC") != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fail := func(err error) { fmt.Fprintln(os.Stderr, err); os.Exit(4) }
	subs := []string{"a", "b", "c"}
	qs := map[string]*Queue{}
	for _, id := range subs {
		q, err := s.Queue(id)
		if err != nil {
			fail(err)
		}
		qs[id] = q
	}
	rare := os.Getenv("HOOKBATCH_SHARED_CRASH_RARE") != ""
	var acks atomic.Int64
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for {
				if rare {
					time.Sleep(2 * time.Millisecond)
				}
				var items []AppendItem
				for range 1 + rng.IntN(3) {
					var to []*Queue
					nq := 1 + rng.IntN(3)
					if rare && rng.IntN(20) != 0 {
						nq = 1
					}
					for _, i := range rng.Perm(3)[:nq] {
						to = append(to, qs[subs[i]])
					}
					items = append(items, AppendItem{Record: []byte("r"), Queues: to})
				}
				if err := s.Append(items, make([]bool, len(items))); err != nil {
					fail(err)
				}
			}
		}()
	}
	for i, id := range subs {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			q := qs[id]
			for n := 0; ; n++ {
				var seqs []uint64
				if err := q.Read(0, 1+rng.IntN(8), func(seq uint64, _ []byte) bool { seqs = append(seqs, seq); return true }); err != nil {
					fail(err)
				}
				if len(seqs) > 0 {
					b := &Batch{ID: fmt.Sprintf("%s-%d-%d", id, time.Now().UnixNano(), n), Subscriber: id, Seqs: seqs}
					if err := q.CreateBatch(b); err != nil {
						fail(err)
					}
				}
				bs, err := s.Batches()
				if err != nil {
					fail(err)
				}
				for _, b := range bs {
					if b.Subscriber != id {
						continue
					}
					if err := s.ReadBatch(b, func(uint64, []byte) error { return nil }); err != nil && !errors.Is(err, ErrClosed) {
						if _, gone := s.GetBatch(b.ID); gone == nil {
							fail(fmt.Errorf("LOSS: batch %s: %w", b.ID, err))
						}
					}
					switch k := rng.IntN(10); {
					case k < 6:
						if err = s.Ack(b); err == nil && acks.Add(1) == 50 {
							fmt.Println("ready") // the parent kills from now on
						}
					case k < 8:
						err = s.DeadLetter(b)
					case k < 9 && len(b.Seqs) > 1:
						_, err = s.Split(b)
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						fail(err)
					}
				}
				dls, err := s.DeadLetters(id, 0)
				if err != nil {
					fail(err)
				}
				for _, d := range dls {
					if rng.IntN(2) == 0 {
						err = s.DropDeadLetter(d.ID)
					} else {
						_, err = s.Replay(d.ID)
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						fail(err)
					}
				}
			}
		}()
	}
	select {}
}

// checkRefs checks, with the writer idle, the layout's invariants: every
// queue entry below its queue's head belongs to exactly one batch or dead
// letter and every one above to none; an entry holding its record is its
// event's only holder, with no separate record or count; an event of empty
// entries has its separate record, and a count n when n > 1 entries hold
// it; nothing else is stored (a leak); and the writer's bounds equal what
// is stored. It returns the events held and the counts stored.
func checkRefs(t *testing.T, s *Store) (events, shared int) {
	t.Helper()
	type entry struct {
		sub string
		seq uint64
	}
	entries := map[entry]bool{} // true: holds its record
	heads := map[string]uint64{}
	owned := map[entry]string{} // by a batch or dead letter
	holders := map[uint64]int{}
	recs := map[uint64]bool{}
	refs := map[uint64]uint64{}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			switch k[0] {
			case 'e':
				recs[be.Uint64(k[1:])] = true
			case 'r':
				refs[be.Uint64(k[1:])] = be.Uint64(v)
			case 'h':
				heads[string(k[1:])] = be.Uint64(v)
			case 'q':
				e := entry{string(k[1 : len(k)-9]), be.Uint64(k[len(k)-8:])}
				entries[e] = len(v) > 0
				holders[e.seq]++
			case 'b', 'x':
				b, err := unmarshalBatch(v)
				if err != nil {
					return err
				}
				for _, seq := range b.Seqs {
					e := entry{b.Subscriber, seq}
					if other, ok := owned[e]; ok {
						return fmt.Errorf("event %d of %s in both %s and %s", seq, b.Subscriber, other, b.ID)
					}
					owned[e] = b.ID
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for e, inline := range entries {
		_, isOwned := owned[e]
		if below := e.seq < heads[e.sub]; below != isOwned {
			t.Fatalf("entry %d of %s: below head %d %t, in a batch %t", e.seq, e.sub, heads[e.sub], below, isOwned)
		}
		if inline && (holders[e.seq] != 1 || recs[e.seq]) {
			t.Fatalf("event %d holds its record in %s's entry, but has %d holders (separate record %t)", e.seq, e.sub, holders[e.seq], recs[e.seq])
		}
		if !inline && !recs[e.seq] {
			t.Fatalf("event %d held %d times has no record", e.seq, holders[e.seq])
		}
	}
	for e, id := range owned {
		if _, ok := entries[e]; !ok {
			t.Fatalf("event %d of %s in %s has no queue entry", e.seq, e.sub, id)
		}
	}
	for seq := range recs {
		n := holders[seq]
		if n == 0 {
			t.Errorf("event %d is stored but held by nobody (leak)", seq)
		}
		switch r, ok := refs[seq]; {
		case n > 1 && r != uint64(n):
			t.Fatalf("event %d held %d times has count %d (stored %v)", seq, n, r, ok)
		case n == 1 && ok:
			t.Fatalf("event %d held once has count %d", seq, r)
		}
	}
	for seq := range refs {
		if !recs[seq] {
			t.Fatalf("count of event %d without its record", seq)
		}
	}
	if sh, rc := writerCounts(t, s); sh != int64(len(refs)) || rc != int64(len(recs)) {
		t.Fatalf("writer counts %d shared and %d records; stored: %d counts, %d records", sh, rc, len(refs), len(recs))
	}
	return len(holders), len(refs)
}

func TestSharedCrashFanOut(t *testing.T) {
	for _, mode := range []int{0, 1, 2, 3} {
		sync, rare := mode&1 != 0, mode&2 != 0
		t.Run(fmt.Sprint("sync=", sync, ",rare=", rare), func(t *testing.T) {
			dir := t.TempDir()
			const rounds = 4
			for round := range rounds {
				env := []string{sharedCrashEnv + "=" + dir}
				if sync {
					env = append(env, "HOOKBATCH_SHARED_CRASH_SYNC=1")
				}
				if rare {
					env = append(env, "HOOKBATCH_SHARED_CRASH_RARE=1")
				}
				ready := false
				killChild(t, "^TestSharedCrashHelper$", env, func(l string) bool {
					if ready = l == "ready"; ready {
						// Kill it at a different point of its work each round.
						time.Sleep(time.Duration(round*100) * time.Millisecond)
					}
					return !ready
				})
				if !ready {
					t.Fatalf("round %d: the child did not acknowledge 50 batches within 30 s", round)
				}
				s, err := Open(Options{Dir: dir, MaxRequestBytes: 1 << 20, Logger: zerolog.Nop()})
				if err != nil {
					t.Fatal(err)
				}
				ev, sh := checkRefs(t, s)
				t.Logf("round %d: %d events, %d shared", round, ev, sh)
				if round == rounds-1 { // deliver everything: nothing may be left
					qs := map[string]*Queue{}
					for _, id := range []string{"a", "b", "c"} {
						qs[id] = openQueue(t, s, id)
					}
					drainAll(t, s, qs)
					ev, sh = checkRefs(t, s)
					if ev != 0 || sh != 0 {
						t.Fatalf("after draining: %d events, %d counts left", ev, sh)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
