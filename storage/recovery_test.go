package storage_test

import (
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
)

// The crash tests re-execute the test binary as a child that writes to a
// store and prints, after each call returns, what that call made durable.
// The parent kills it with SIGKILL mid-stream, reopens the store and checks
// that everything printed is there.
const (
	helperModeEnv = "HOOKBATCH_STORAGE_HELPER"
	helperDirEnv  = "HOOKBATCH_STORAGE_HELPER_DIR"
)

// TestHelperProcess is the child of the crash tests; it does nothing in a
// normal run.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		t.Skip("helper process of the crash tests")
	}
	s, err := storage.Open(storage.Options{
		Dir:             os.Getenv(helperDirEnv),
		SyncWrites:      true,
		DedupWindow:     time.Hour,
		MaxRequestBytes: 1 << 20,
		Logger:          zerolog.Nop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	// emit writes one whole line per write(2), so the parent never reads
	// a line the child had not finished when it was killed.
	emit := func(format string, a ...any) {
		line := fmt.Appendf(nil, format+"\n", a...)
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.Write(line); err != nil {
			os.Exit(3)
		}
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	switch mode {
	case "append":
		helperAppend(s, emit, fail, 1)
	case "arrays":
		helperAppend(s, emit, fail, 50)
	case "batch":
		helperBatch(s, emit, fail)
	default:
		fail(fmt.Errorf("unknown helper mode %q", mode))
	}
	select {} // wait for SIGKILL
}

// helperAppend appends from 16 goroutines, per events per call and every
// third call one more, fanned out to two queues, and prints "<id>" for each
// event stored. With 50 per call, commits are large enough for the writer
// to send them in the background (pipelineEntries).
func helperAppend(s *storage.Store, emit func(string, ...any), fail func(error), per int) {
	a, err := s.Queue("a")
	if err != nil {
		fail(err)
	}
	b, err := s.Queue("b")
	if err != nil {
		fail(err)
	}
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d/%d", g, i)
				var items []storage.AppendItem
				for k := range per {
					items = append(items, ev(fmt.Sprintf("%s/%d", id, k), a))
				}
				if i%3 == 0 {
					items = append(items, ev(id+"/ab", a, b))
				}
				dup := make([]bool, len(items))
				if err := s.Append(items, dup); err != nil {
					fail(err)
				}
				for j, it := range items {
					if dup[j] {
						fail(fmt.Errorf("%s reported as a dup", it.ID))
					}
					emit("%s", it.ID)
				}
			}
		}()
	}
}

// helperBatch runs a queue through its whole life at once: 8 goroutines
// append to queue q and print "e <id>"; one batcher forms batches of up to
// 20 events and prints "b <id> <seq>,<seq>,..." once each is stored; it acks
// every other batch, printing "a <id>" after the ack, and dead-letters every
// fifth one, printing "x <id>".
func helperBatch(s *storage.Store, emit func(string, ...any), fail func(error)) {
	q, err := s.Queue("q")
	if err != nil {
		fail(err)
	}
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d/%d", g, i)
				if err := s.Append([]storage.AppendItem{ev(id, q)}, make([]bool, 1)); err != nil {
					fail(err)
				}
				emit("e %s", id)
			}
		}()
	}
	go func() {
		var cursor uint64
		for n := 0; ; n++ {
			var batch []uint64
			if err := q.Read(cursor, 20, func(seq uint64, _ []byte) bool {
				batch = append(batch, seq)
				return true
			}); err != nil {
				fail(err)
			}
			if len(batch) == 0 {
				<-q.Notify()
				continue
			}
			cursor = batch[len(batch)-1]
			b := &storage.Batch{ID: fmt.Sprintf("b%06d", n), Subscriber: "q", Seqs: batch, Created: int64(n)}
			if err := q.CreateBatch(b); err != nil {
				fail(err)
			}
			strs := make([]string, len(batch))
			for i, seq := range batch {
				strs[i] = strconv.FormatUint(seq, 10)
			}
			emit("b %s %s", b.ID, strings.Join(strs, ","))
			switch {
			case n%5 == 0:
				if err := s.DeadLetter(b); err != nil {
					fail(err)
				}
				emit("x %s", b.ID)
			case n%2 == 0:
				if err := s.Ack(b); err != nil {
					fail(err)
				}
				emit("a %s", b.ID)
			}
		}
	}()
}

// runCrashChild starts the helper in mode on dir, hands each line it prints
// to line until line returns false, then kills it with SIGKILL.
func runCrashChild(t *testing.T, mode, dir string, line func(string) bool) {
	t.Helper()
	storage.KillChild(t, "^TestHelperProcess$", []string{helperModeEnv + "=" + mode, helperDirEnv + "=" + dir}, line)
}

// TestCrashAppend kills a process appending with fsync and checks that every
// event whose Append had returned is in its queues after a reopen, once:
// single events, then arrays of 50.
func TestCrashAppend(t *testing.T) {
	t.Run("single", func(t *testing.T) { crashAppend(t, "append", 3000) })
	t.Run("arrays", func(t *testing.T) { crashAppend(t, "arrays", 30000) })
}

func crashAppend(t *testing.T, mode string, want int) {
	dir := t.TempDir()
	var acked []string
	runCrashChild(t, mode, dir, func(l string) bool {
		acked = append(acked, l)
		return len(acked) < want
	})
	if len(acked) < want {
		t.Fatalf("the child acknowledged only %d events", len(acked))
	}

	s := mustOpen(t, dir, withDedup(time.Hour))
	a, b := mustQueue(t, s, "a"), mustQueue(t, s, "b")
	inA, inB := readQueue(t, a, 0), readQueue(t, b, 0)
	checkDepth(t, a, int64(len(inA)))
	checkDepth(t, b, int64(len(inB)))
	count := make(map[string]int)
	bySeq := make(map[uint64]string)
	for _, evs := range [][]got{inA, inB} {
		for i, e := range evs {
			if i > 0 && e.Seq <= evs[i-1].Seq {
				t.Fatalf("sequence numbers not increasing after recovery")
			}
			if e.Data != dataOf(e.ID) {
				t.Fatalf("event %s recovered with data %q", e.ID, e.Data)
			}
			if id, ok := bySeq[e.Seq]; ok && id != e.ID {
				t.Fatalf("seq %d holds %s in one queue and %s in the other", e.Seq, id, e.ID)
			}
			bySeq[e.Seq] = e.ID
			count[e.ID]++
		}
	}
	for _, id := range acked {
		wantN := 1
		if strings.HasSuffix(id, "/ab") {
			wantN = 2
		}
		if count[id] != wantN {
			t.Fatalf("acknowledged event %s found %d times after the crash, want %d", id, count[id], wantN)
		}
	}
	for id, n := range count {
		if n > 1 && !strings.HasSuffix(id, "/ab") {
			t.Fatalf("event %s recovered %d times", id, n)
		}
	}

	// The store goes on: new sequence numbers come after every recovered
	// one, and the recovered dedup index still holds.
	var maxSeq uint64
	for seq := range bySeq {
		maxSeq = max(maxSeq, seq)
	}
	if dup := mustAppend(t, s, ev("after", a), ev(acked[0], a)); dup[0] || !dup[1] {
		t.Fatalf("append after recovery: dup = %v, want [false true]", dup)
	}
	evs := readQueue(t, a, maxSeq)
	if len(evs) != 1 || evs[0].ID != "after" {
		t.Fatalf("Read after the recovered events = %q, want only the new one", ids(evs))
	}
}

// TestCrashBatch kills a process that appends, forms batches, acks and
// dead-letters at once, and checks that after a reopen every stored batch is
// there with its contents, acked and dead-lettered ones are gone from the
// pending batches, no batched event is queued again and no acknowledged
// event is lost.
func TestCrashBatch(t *testing.T) {
	dir := t.TempDir()
	var (
		appended = make(map[string]bool)
		created  = make(map[string][]uint64)
		acked    = make(map[string]bool)
		dead     = make(map[string]bool)
	)
	runCrashChild(t, "batch", dir, func(l string) bool {
		kind, rest, _ := strings.Cut(l, " ")
		switch kind {
		case "e":
			appended[rest] = true
		case "b":
			id, list, _ := strings.Cut(rest, " ")
			var ss []uint64
			for _, f := range strings.Split(list, ",") {
				n, err := strconv.ParseUint(f, 10, 64)
				if err != nil {
					t.Fatalf("bad line %q", l)
				}
				ss = append(ss, n)
			}
			created[id] = ss
		case "a":
			acked[rest] = true
		case "x":
			dead[rest] = true
		default:
			t.Fatalf("bad line %q", l)
		}
		return len(appended) < 2000 || len(created) < 30
	})

	s := mustOpen(t, dir)
	q := mustQueue(t, s, "q")
	pending := mustBatches(t, s)
	dls, err := s.DeadLetters("", 0)
	if err != nil {
		t.Fatal(err)
	}
	deadStored := make(map[string]*storage.Batch)
	for _, d := range dls {
		deadStored[d.ID] = d
	}
	for id, ss := range created {
		switch {
		case acked[id]:
			if pending[id] != nil || deadStored[id] != nil {
				t.Fatalf("acked batch %s is still stored", id)
			}
		case dead[id]:
			if pending[id] != nil || deadStored[id] == nil {
				t.Fatalf("dead-lettered batch %s: pending %v, dead letter %v", id, pending[id] != nil, deadStored[id] != nil)
			}
			if !slices.Equal(deadStored[id].Seqs, ss) {
				t.Fatalf("dead letter %s holds %v, created with %v", id, deadStored[id].Seqs, ss)
			}
		default:
			// Created, and its ack or dead-lettering may have been cut short.
			b := pending[id]
			if b == nil {
				b = deadStored[id]
			}
			if b == nil {
				if !isEven(id) || isFifth(id) {
					t.Fatalf("stored batch %s is gone after the crash", id)
				}
				// An ack may have committed without being printed.
				continue
			}
			if !slices.Equal(b.Seqs, ss) {
				t.Fatalf("batch %s holds %v after the crash, created with %v", id, b.Seqs, ss)
			}
		}
	}

	// Every acknowledged event is either queued or in a stored batch (or
	// was in an acked one), and no event is both.
	batched := make(map[uint64]string)
	for id, ss := range created {
		for _, seq := range ss {
			batched[seq] = id
		}
	}
	where := make(map[string]string)
	queued := readQueue(t, q, 0)
	for _, e := range queued {
		if id, ok := batched[e.Seq]; ok {
			t.Fatalf("event %s (seq %d) of batch %s is queued again after the crash", e.ID, e.Seq, id)
		}
		where[e.ID] = "queue"
	}
	depth := int64(len(queued))
	for _, b := range slices.Concat(slices.Collect(maps.Values(pending)), dls) {
		evs, err := readBatch(t, s, b)
		if err != nil {
			t.Fatalf("ReadBatch %s after the crash: %v", b.ID, err)
		}
		if !reflect.DeepEqual(seqs(evs), b.Seqs) {
			t.Fatalf("ReadBatch %s read %v", b.ID, seqs(evs))
		}
		for _, e := range evs {
			if w, ok := where[e.ID]; ok {
				t.Fatalf("event %s is in %s and in batch %s", e.ID, w, b.ID)
			}
			where[e.ID] = "batch " + b.ID
		}
		if pending[b.ID] != nil {
			depth += int64(len(b.Seqs))
		}
	}
	checkDepth(t, q, depth)
	ackedSeqs := make(map[uint64]bool)
	for id, ss := range created {
		if pending[id] == nil && deadStored[id] == nil {
			for _, seq := range ss {
				ackedSeqs[seq] = true
			}
		}
	}
	missing := 0
	for id := range appended {
		if where[id] == "" {
			missing++
		}
	}
	// Events missing from the queue and every stored batch can only be the
	// contents of acked batches.
	if missing > len(ackedSeqs) {
		t.Fatalf("%d acknowledged events are gone, only %d were in acked batches", missing, len(ackedSeqs))
	}
}

func batchNum(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "b"))
	return n
}

func isEven(id string) bool  { return batchNum(id)%2 == 0 }
func isFifth(id string) bool { return batchNum(id)%5 == 0 }
