package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestRecordCursor asks a recordCursor for seqs in the orders reads use
// (ascending, with gaps short and long) and in others (repeats, going back),
// over records some of which are in tables, some in the memtable and some
// deleted in either: it must find exactly the records that exist.
func TestRecordCursor(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	rng := rand.New(rand.NewPCG(7, 11))
	const maxSeq = 3000
	present := make(map[uint64]bool)
	write := func(from, to uint64) {
		t.Helper()
		txn := s.db.NewTransaction(true)
		for seq := from; seq <= to; seq++ {
			var err error
			switch r := rng.IntN(10); {
			case r < 6:
				err = txn.Set(eventKey(seq), recordOf(seq))
				present[seq] = true
			case r < 8 && present[seq]:
				err = txn.Delete(eventKey(seq))
				delete(present, seq)
			}
			if err != nil {
				t.Fatal(err)
			}
			if seq%500 == 0 {
				if err := txn.Commit(); err != nil {
					t.Fatal(err)
				}
				txn = s.db.NewTransaction(true)
			}
		}
		if err := txn.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	write(1, maxSeq)
	if err := s.Close(); err != nil { // the memtable goes to a table
		t.Fatal(err)
	}
	s = openStore(t, dir)
	write(1, maxSeq/2) // overwrites and deletions in the memtable, over the tables

	check := func(name string, seqs []uint64) {
		t.Helper()
		err := s.view(func(txn *badger.Txn) error {
			rc := newRecordCursor(txn, kindEvent)
			defer rc.close()
			for i, seq := range seqs {
				item, err := rc.find(seq)
				if err != nil {
					return err
				}
				if (item != nil) != present[seq] {
					t.Fatalf("%s: ask %d (seq %d): found %t, want %t", name, i, seq, item != nil, present[seq])
				}
				if item == nil {
					continue
				}
				if err := item.Value(func(v []byte) error {
					if !bytes.Equal(v, recordOf(seq)) {
						t.Fatalf("%s: seq %d: value %x", name, seq, v)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var all []uint64
	for seq := uint64(1); seq <= maxSeq+5; seq++ {
		all = append(all, seq)
	}
	check("every seq", all)
	for gap := 1; gap <= 2*recordSteps+1; gap++ {
		var seqs []uint64
		for seq := uint64(rng.IntN(gap) + 1); seq <= maxSeq+5; seq += uint64(rng.IntN(gap) + 1) {
			seqs = append(seqs, seq)
		}
		check("ascending", seqs)
	}
	var mixed []uint64
	for range 5000 {
		mixed = append(mixed, uint64(rng.IntN(maxSeq+10)))
	}
	check("any order", mixed)
	// Ranges within one block of 256 and across blocks, each ending on
	// a repeat.
	for _, r := range [][2]uint64{{300, 400}, {1, 255}, {250, 262}, {255, 256}, {700, 1100}, {2900, maxSeq + 5}} {
		var seqs []uint64
		for seq := r[0]; seq <= r[1]; seq += uint64(rng.IntN(3) + 1) {
			seqs = append(seqs, seq)
		}
		seqs = append(seqs, r[1])
		check(fmt.Sprintf("%d..%d", r[0], r[1]), seqs)
	}
}

// recordOf is the record TestRecordCursor stores for seq: small for even
// seqs (in the LSM tree), over the value threshold for odd ones (in the
// value log).
func recordOf(seq uint64) []byte {
	n := 8
	if seq%2 == 1 {
		n = valueThreshold + 8
	}
	return be.AppendUint64(make([]byte, n-8, n), seq)
}

// TestReadMissingRecord: a queue entry whose record is gone stops Read with
// an EventError naming it, after the events before it, and a batch holding
// it stops ReadBatch the same way.
func TestReadMissingRecord(t *testing.T) {
	s := openStore(t, t.TempDir())
	q, other := openQueue(t, s, "s"), openQueue(t, s, "t")
	items := make([]AppendItem, 20)
	for i := range items {
		// Of two queues, so that each record is stored apart and can go
		// missing.
		items[i] = AppendItem{Record: []byte{byte(i)}, Queues: []*Queue{q, other}}
	}
	if err := s.Append(items, make([]bool, len(items))); err != nil {
		t.Fatal(err)
	}
	const gone = 13
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(eventKey(gone)) }); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	err := q.Read(0, 100, func(seq uint64, rec []byte) bool {
		if len(rec) != 1 || uint64(rec[0])+1 != seq {
			t.Fatalf("seq %d: record %x", seq, rec)
		}
		seqs = append(seqs, seq)
		return true
	})
	var ee *EventError
	if !errors.As(err, &ee) || ee.Seq != gone {
		t.Fatalf("Read: %v, want an EventError for %d", err, gone)
	}
	if len(seqs) != gone-1 {
		t.Fatalf("Read gave %d events before the missing one, want %d", len(seqs), gone-1)
	}
	b := &Batch{ID: "b1", Subscriber: "s", Seqs: []uint64{2, 5, gone, 17}}
	var got []uint64
	err = s.ReadBatch(b, func(seq uint64, _ []byte) error { got = append(got, seq); return nil })
	if !errors.As(err, &ee) || ee.Seq != gone || len(got) != 2 {
		t.Fatalf("ReadBatch: %v after %v, want an EventError for %d after 2 events", err, got, gone)
	}
}
