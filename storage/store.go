// Package storage keeps hookbatch's durable state in Badger: one FIFO queue
// of events per subscriber, the batches formed from them, dead letters and the
// dedup index. Every write goes through one writer goroutine that commits
// many callers' operations in one transaction (group commit), so one fsync
// covers many ingest requests.
//
// Key layout (one byte of kind, then the rest):
//
//	m seq                 last sequence number handed out (8 bytes)
//	m layout              the layout version that last wrote the store (8 bytes;
//	                      absent before version 2, records in queue entries)
//	q <sub> 0x00 <seq>    event <seq> of <sub>'s queue: the event's record
//	                      (event.AppendRecord), or empty when several queues
//	                      hold the event and its record is e <seq>
//	h <sub>               <sub>'s head: every q entry below it is in a batch
//	                      or a dead letter, and stays until that is released
//	e <seq>               the record of an event several queues hold
//	r <seq>               reference count of e<seq> while more than one queue holds it
//	b <batch id>          a formed batch awaiting delivery
//	x <batch id>          a dead-lettered batch
//	p <sub>               <sub> is paused; the value says why
//	d <event id>          dedup marker, expires after the dedup window
//	z flush               written and dropped at once to flush the memtable (reclaim)
//
// An event of one subscriber costs three entries over its life: its queue
// entry and dedup marker, then the entry's deletion once its batch is
// delivered (or its dead letter dropped). An event several subscribers
// receive is stored once however many they are; its record is deleted when
// the last batch or dead letter holding it is gone. Stores written before
// records moved into queue entries (every record an e key, every queue
// entry deleted when its batch formed) are read and released the same way.
package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/skl"
	"github.com/rs/zerolog"
)

var (
	// ErrClosed is returned by every operation after Close has begun.
	ErrClosed = errors.New("storage is closed")
	// ErrFull is returned by Append while disk use is above MaxDiskBytes.
	ErrFull = errors.New("storage quota reached")
	// ErrTooLarge is returned by Append when one request cannot be stored in
	// a single transaction.
	ErrTooLarge = errors.New("request too large to store atomically")
	// ErrNotFound is returned for an unknown batch or dead letter.
	ErrNotFound = errors.New("not found")
)

// EventError is a queued or batched event whose record cannot be read: it
// is missing or the caller found it unreadable. Reading it again will not
// help, so the event has to be taken aside (delivery dead-letters its batch).
type EventError struct {
	Seq uint64
	Err error
}

func (e *EventError) Error() string { return fmt.Sprintf("event %d: %v", e.Seq, e.Err) }
func (e *EventError) Unwrap() error { return e.Err }

// Options configures a Store.
type Options struct {
	Dir          string
	SyncWrites   bool
	MaxDiskBytes int64         // 0: unlimited
	DedupWindow  time.Duration // 0: no dedup
	// MaxRequestBytes is the largest ingest body and MaxRequestEntries the
	// most entries one request writes (events times 3 + subscribers); the
	// memtable is sized so that such a request fits in one transaction, up
	// to 256 MiB. A larger request gets ErrTooLarge.
	MaxRequestBytes   int
	MaxRequestEntries int
	Logger            zerolog.Logger
	// OnCommit, if set, is told of every commit of the writer: how long
	// Badger took to store it (its fsyncs included with SyncWrites) and how
	// many operations (Appends, batch changes) shared it. It runs on the
	// writer's path: it must be quick.
	OnCommit func(took time.Duration, ops int)

	// mappedBudget, for tests, replaces the file-backed RSS over which the
	// store pages out its mapped files (pageOut); below zero: never.
	mappedBudget int64
}

// Store is the durable state of one relay. Its methods are safe for
// concurrent use.
type Store struct {
	db   *badger.DB
	opts Options
	log  zerolog.Logger

	w *writer

	mu     sync.Mutex
	queues map[string]*Queue

	// mappedDir is opts.Dir as /proc/self/maps names it ("": no paging
	// out); mappedBudget the file-backed RSS over which pageOut acts, and
	// mappedFloor that RSS after its last pass. Owned by pageOut's goroutine
	// once Open returns.
	mappedDir                 string
	mappedBudget, mappedFloor int64

	diskBytes atomic.Int64
	full      atomic.Bool
	released  atomic.Int64 // events released (acknowledged or dropped) since reclaimIfFull last looked
	// reclaimLeft counts down the looks reclaimIfFull still reclaims
	// for since the last release.
	reclaimLeft atomic.Int64
	vlogFile    int64 // bytes of a value-log file

	// gcMu lets one value-log collection run at a time (the minute pass or
	// reclaim): Badger rejects a second, and reclaim's flush would fail the
	// rewrites of a pass under way.
	gcMu sync.Mutex

	// readMu lets Close wait for reads in progress; closed makes later
	// reads fail with ErrClosed instead of reaching a closed Badger.
	readMu sync.RWMutex
	closed bool

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("storage directory is empty")
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create data directory %q: %w", opts.Dir, err)
	}
	// Memory is dominated by the memtables and by the table builders of
	// flushes and compactions (each allocates twice its table size), so
	// both are kept small; the memtable only grows when one transaction
	// (15% of it) could not hold the largest request.
	memtable := memtableSize(opts)
	vlogFile := max(int64(64<<20), 2*int64(opts.MaxRequestBytes))
	bopts := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerLogger{opts.Logger}).
		WithMemTableSize(memtable).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(10).
		WithBaseTableSize(2 << 20).
		// Event records above 256 bytes go to the value log, so a large
		// backlog is not rewritten by LSM compactions, whose table builders
		// held over 200 MB of heap for a 200 MB backlog (measured with
		// TestBacklogStaysOnDisk); synced ingest was as fast either way.
		WithValueThreshold(valueThreshold).
		WithBlockCacheSize(0). // blocks are read from mmap: nothing is compressed
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(vlogFile).
		WithCompression(options.None).
		WithDetectConflicts(false).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	// Tables of 2 MiB at every level, not doubling per level: compactions
	// build up to ten tables at once, each in a buffer of twice its size, so
	// deeper levels cost heap as the backlog grows (2M queued: ~80 MB less
	// anonymous RSS, same ingest and drain rates, two alternating runs).
	bopts.TableSizeMultiplier = 1
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("cannot open badger in %q: %w", opts.Dir, err)
	}
	s := &Store{
		db:       db,
		opts:     opts,
		log:      opts.Logger,
		queues:   make(map[string]*Queue),
		stop:     make(chan struct{}),
		vlogFile: vlogFile,
	}
	if err := s.checkLayout(); err != nil {
		_ = db.Close()
		return nil, err
	}
	seq, err := s.loadSeq()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	shared, err := s.countShared()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	records, err := s.countKeys(kindEvent)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cannot count event records: %w", err)
	}
	s.w = newWriter(s, seq, shared, records, memtable)
	// The memtables' logs stay mapped whole: beyond them, 64 MiB for the
	// program's own file-backed pages, the value log and the tables.
	s.mappedBudget = 2*memtable + 64<<20
	if opts.mappedBudget != 0 {
		s.mappedBudget = max(opts.mappedBudget, 0)
	}
	if s.mappedBudget > 0 {
		if pageOutWorks() {
			s.mappedDir = realDir(opts.Dir)
		} else if runtime.GOOS == "linux" {
			s.log.Info().Msg("the kernel refuses MADV_PAGEOUT: the pages of Badger's memory-mapped files leave RSS only when it reclaims them")
		}
	}
	s.updateDiskUsage()
	s.wg.Add(5)
	go s.w.run(&s.wg)
	go s.every(time.Second, s.updateDiskUsage)
	go s.every(250*time.Millisecond, s.pageOut)
	go s.every(time.Minute, s.collectGarbage)
	go s.every(10*time.Second, s.reclaimIfFull)
	return s, nil
}

// Close stops the writer after every queued operation is answered, stops the
// background work and closes Badger. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.w.close()
		close(s.stop)
		s.wg.Wait()
		s.readMu.Lock()
		s.closed = true
		s.readMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("cannot close badger: %w", err)
		}
	})
	return s.closeErr
}

// MaxBatchEvents bounds the events of the batches one CreateBatches call
// stores (forming costs an entry per batch, so the bound is generous; each
// batch's own release, up to two entries per event, must fit a
// transaction, which CreateBatches checks).
func (s *Store) MaxBatchEvents() int { return int(s.w.maxCount) - 64 }

// MaxEntries is the most entries one operation may write (one Append of a
// request): sized at Open from Options.MaxRequestEntries, with room to
// spare.
func (s *Store) MaxEntries() int { return int(s.w.maxCount) }

// DiskBytes is the size of the data directory, refreshed every second.
func (s *Store) DiskBytes() int64 { return s.diskBytes.Load() }

// Full reports whether disk use is above the quota.
func (s *Store) Full() bool { return s.full.Load() }

// checkLayout refuses a store written by a later layout, which this build
// could misread, and records that this build's layout writes it from now on.
func (s *Store) checkLayout() error {
	var stored uint64
	err := s.view(func(txn *badger.Txn) (err error) {
		stored, err = getUint64(txn, layoutKey)
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("cannot read the storage layout: %w", err)
	case stored > layout:
		return fmt.Errorf("the data directory %q was written by a newer hookbatch (storage layout %d; this build reads up to %d)", s.opts.Dir, stored, layout)
	case stored == layout:
		return nil
	}
	err = s.db.Update(func(txn *badger.Txn) error { return txn.Set(layoutKey, be.AppendUint64(nil, layout)) })
	if err != nil {
		return fmt.Errorf("cannot record the storage layout: %w", err)
	}
	return nil
}

func (s *Store) loadSeq() (uint64, error) {
	var seq uint64
	err := s.view(func(txn *badger.Txn) (err error) {
		seq, err = getUint64(txn, seqKey)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cannot read the sequence number: %w", err)
	}
	return seq, nil
}

// getUint64 reads a key holding one big-endian uint64; 0 when absent.
func getUint64(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("corrupt key %q: %d bytes", key, len(v))
		}
		n = be.Uint64(v)
		return nil
	})
	return n, err
}

// countShared counts the stored reference counts: the events held by more
// than one queue.
func (s *Store) countShared() (int64, error) {
	n, err := s.countKeys(kindRef)
	if err != nil {
		return 0, fmt.Errorf("cannot count shared events: %w", err)
	}
	return n, nil
}

// countKeys counts the keys beginning with prefix.
func (s *Store) countKeys(prefix []byte) (int64, error) {
	var n int64
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// view runs fn in a read transaction, or fails with ErrClosed.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	s.readMu.RLock()
	defer s.readMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// memtableSize is the smallest memtable (16 MiB and up, by powers of two,
// at most 256 MiB) in which one request of the largest kind fits in one
// transaction: Badger refuses a transaction of over 15% of a memtable in
// bytes, or of that many bytes divided by a skiplist node in entries, and
// the writer stays within 80% of both.
func memtableSize(opts Options) int64 {
	entries := int64(opts.MaxRequestEntries)
	// Records under the value threshold live in the LSM tree: at most the
	// whole body. Larger ones cost a pointer each.
	needBytes := min(int64(opts.MaxRequestBytes), entries*valueThreshold)*3/2 + entries*32
	memtable := int64(16 << 20)
	for memtable < 256<<20 {
		limit := memtable * 15 / 100 * 8 / 10
		if limit >= needBytes && limit/int64(skl.MaxNodeSize) >= entries {
			break
		}
		memtable *= 2
	}
	return memtable
}

// updateDiskUsage counts the blocks the data directory takes on disk (not
// file sizes: Badger preallocates sparse files).
func (s *Store) updateDiskUsage() {
	var total int64
	_ = filepath.WalkDir(s.opts.Dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			total += diskSize(info)
		}
		return nil
	})
	s.diskBytes.Store(total)
	s.full.Store(s.opts.MaxDiskBytes > 0 && total >= s.opts.MaxDiskBytes)
}

// stopping reports whether Close has begun.
func (s *Store) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// every runs fn every d until Close.
func (s *Store) every(d time.Duration, fn func()) {
	defer s.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// collectGarbage reclaims value-log space: event records above the value
// threshold live there; smaller ones come back through LSM compactions.
func (s *Store) collectGarbage() {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	for s.db.RunValueLogGC(0.5) == nil {
		select {
		case <-s.stop:
			return
		default:
		}
	}
}

// reclaimIfFull runs reclaim while the store is over its quota and events
// have been released since the last look, or were within the last
// reclaimRetries looks (compactions may not have counted a release yet):
// with nothing released there is nothing to give back.
func (s *Store) reclaimIfFull() {
	if s.released.Swap(0) > 0 {
		s.reclaimLeft.Store(reclaimRetries)
	}
	if s.full.Load() && s.reclaimLeft.Add(-1) >= 0 {
		s.reclaim()
	}
}

// reclaimRetries is how many looks reclaim runs for, full, after a release.
const reclaimRetries = 6

// reclaim gives back the space of released events. Badger frees a
// value-log file only once compactions have counted the entries in it that
// were deleted, and an idle store whose backlog was delivered may not
// compact for a long time, leaving ingest refused over the quota. So:
// flush the memtable (dropping a marker key is Badger's way to force it),
// compact every level, and collect the value log until the store is a
// margin under its quota.
// The flush runs in the writer between two commits, since Badger refuses
// writes while it drops a prefix; the compaction runs beside the writer.
func (s *Store) reclaim() {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	flush := &op{urgent: true, alone: func() error {
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(flushKey, nil) }); err != nil {
			return err
		}
		return s.db.DropPrefix(flushKey)
	}}
	err := s.w.do(flush)
	if err == nil && !s.stopping() {
		err = s.db.Flatten(1)
	}
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Warn().Err(err).Msg("cannot compact storage to reclaim space")
	}
	// The value log is collected one file at a time between two commits
	// of the writer: Badger (v4.9.6) starts a pass by reading the
	// memtable's highest version under a lock its commits do not take when
	// they write it, a data race with any commit being applied. A pass
	// holds commits back for one file's rewrite, so the passes stop once
	// the store is a margin under its quota (lest ingest fill the last
	// file's worth at once and be refused again); the pass every minute
	// collects the rest beside the writer (a stale read there only makes
	// Badger keep more versions, where stalling ingest every minute would
	// cost more).
	// Files mostly garbage first; then, still over, files less so (events
	// of a stuck subscriber beside delivered ones): a rewrite frees what
	// is garbage in a file whatever its share.
	low := s.opts.MaxDiskBytes - max(s.vlogFile, s.opts.MaxDiskBytes/10)
	passes, step := 0, 0
	err = nil
	for !s.stopping() {
		discard := reclaimRatios[step]
		err = s.w.do(&op{urgent: true, alone: func() error { return s.db.RunValueLogGC(discard) }})
		if errors.Is(err, badger.ErrNoRewrite) && step+1 < len(reclaimRatios) {
			step++
			continue
		}
		if err != nil {
			break
		}
		passes++
		s.updateDiskUsage()
		if s.DiskBytes() <= low {
			break
		}
	}
	exhausted := errors.Is(err, badger.ErrNoRewrite)
	if exhausted || errors.Is(err, ErrClosed) {
		err = nil // nothing left worth rewriting; closing
	}
	s.updateDiskUsage()
	ev := s.log.Info()
	switch {
	case err != nil:
		ev = s.log.Warn().AnErr("value_log_error", err)
	case exhausted && s.Full():
		// Badger (v4.9.6) only considers the file with the most garbage,
		// and never the one it is writing, which ingest refused while full
		// does not fill: that file's garbage waits for a restart.
		ev = s.log.Warn().Str("hint", "no value-log file could be rewritten; if most released events are in the newest file, a restart frees it")
	}
	ev.Int64("disk_bytes", s.DiskBytes()).Bool("full", s.Full()).Int("value_log_passes", passes).
		Msg("storage over its quota: reclaim done")
}

// reclaimRatios are the shares of garbage over which reclaim rewrites a
// value-log file, tried in turn.
var reclaimRatios = []float64{0.5, 0.25, 0.1}

type badgerLogger struct{ l zerolog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error().Str("component", "badger").Msgf(f, a...)
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn().Str("component", "badger").Msgf(f, a...)
}
func (b badgerLogger) Infof(f string, a ...any) { b.l.Debug().Str("component", "badger").Msgf(f, a...) }
func (b badgerLogger) Debugf(string, ...any)    {}

// diskSize is the space a file takes on disk.
func diskSize(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
