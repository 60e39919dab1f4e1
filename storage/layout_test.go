package storage

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// storedKeys lists every key in the store with its value, in key order.
func storedKeys(t *testing.T, s *Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keysOf lists the keys of kind k among keys, sorted.
func keysOf(keys map[string][]byte, k byte) []string {
	var out []string
	for key := range keys {
		if key[0] == k {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// The record of an event of one queue is its queue entry's value, nothing
// else is stored for it but its dedup marker, and the entry stays below the
// head while its batch or dead letter lives: it is read from there, and
// deleted with the batch's release.
func TestLayoutOneQueue(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	q := openQueue(t, s, "s")
	// Above and below the value threshold: in the LSM tree and in the value log.
	big := string(bytes.Repeat([]byte("x"), valueThreshold+10))
	for _, rec := range []string{"r1", big, "r3", "r4"} {
		appendTo(t, s, rec, q)
	}
	keys := storedKeys(t, s)
	if e := keysOf(keys, 'e'); len(e) != 0 {
		t.Fatalf("separate records %q stored for events of one queue", e)
	}
	for seq, want := range map[uint64]string{1: "r1", 2: big, 4: "r4"} {
		if got := keys[string(q.key(seq))]; string(got) != want {
			t.Fatalf("entry %d holds %.20q, want %.20q", seq, got, want)
		}
	}

	b1 := formBatch(t, q, "b1", 2)
	b2 := formBatch(t, q, "b2", 1)
	if err := s.DeadLetter(b2); err != nil {
		t.Fatal(err)
	}
	ids, err := s.QueueIDs()
	if err != nil || !slices.Equal(ids, []string{"s"}) {
		t.Fatalf("QueueIDs: %v, %v; want [s]", ids, err)
	}
	for _, seq := range []uint64{1, 2, 3} {
		if !stored(t, s, q.key(seq)) {
			t.Fatalf("entry %d, in a batch or dead letter, was deleted", seq)
		}
	}

	// A reopen finds the queue's head past the batched entries.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	q = openQueue(t, s, "s")
	if d := q.Depth(); d != 3 {
		t.Fatalf("depth %d after reopen, want 3 (b1's two events and one queued)", d)
	}
	var queued []uint64
	if err := q.Read(0, 10, func(seq uint64, _ []byte) bool { queued = append(queued, seq); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(queued, []uint64{4}) {
		t.Fatalf("queued after reopen: %v, want [4]", queued)
	}
	var recs []string
	if err := s.ReadBatch(b1, func(_ uint64, rec []byte) error { recs = append(recs, string(rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(recs, []string{"r1", big}) {
		t.Fatalf("b1 read %.20q", recs)
	}
	if _, err := s.Replay("b2"); err != nil {
		t.Fatal(err)
	}
	mustReadBatch(t, s, b2)

	if err := s.Ack(b1); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(b2); err != nil {
		t.Fatal(err)
	}
	if err := s.DropDeadLetter("b2"); err != nil {
		t.Fatal(err)
	}
	keys = storedKeys(t, s)
	if q := keysOf(keys, 'q'); !slices.Equal(q, []string{string(openQueue(t, s, "s").key(4))}) {
		t.Fatalf("queue entries after the releases: %q, want the queued one only", q)
	}
	if n, m := len(keysOf(keys, 'b')), len(keysOf(keys, 'x')); n+m != 0 {
		t.Fatalf("%d batches and %d dead letters left", n, m)
	}
	checkRefs(t, s)
}

// A store written before records moved into queue entries (each record an
// e key, its queue entry empty and deleted when its batch formed) is read
// and released as before, and what is appended to it afterwards takes the
// new layout.
func TestLayoutBefore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	q := openQueue(t, s, "s")
	// Events 1-4 of s: 1 and 2 in batch b1 (their entries deleted), 3 and
	// 4 queued, 5 shared with t (count 2) and queued in both.
	b1 := &Batch{ID: "b1", Subscriber: "s", Seqs: []uint64{1, 2}, Created: 1}
	err := s.db.Update(func(txn *badger.Txn) error {
		var err error
		set := func(k, v []byte) {
			if err == nil {
				err = txn.Set(k, v)
			}
		}
		for seq := uint64(1); seq <= 5; seq++ {
			set(eventKey(seq), fmt.Appendf(nil, "r%d", seq))
		}
		set(seqKey, be.AppendUint64(nil, 5))
		set(headKey("s"), be.AppendUint64(nil, 3))
		for _, seq := range []uint64{3, 4, 5} {
			set(q.key(seq), nil)
		}
		set(append(queuePrefix("t"), be.AppendUint64(nil, 5)...), nil)
		set(refKey(5), be.AppendUint64(nil, 2))
		set(batchKey("b1"), b1.marshal(nil))
		if err == nil {
			err = txn.Delete(layoutKey) // written by no earlier build
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if v := storedKeys(t, s)[string(layoutKey)]; len(v) != 8 || be.Uint64(v) != layout {
		t.Fatalf("layout key %x after opening an earlier store, want %d", v, layout)
	}
	if sh, rc := writerCounts(t, s); sh != 1 || rc != 5 {
		t.Fatalf("counted %d shared and %d records stored apart, want 1 and 5", sh, rc)
	}
	q, tq := openQueue(t, s, "s"), openQueue(t, s, "t")
	if d := q.Depth(); d != 5 {
		t.Fatalf("depth of s %d, want 5", d)
	}
	appendTo(t, s, "r6", q)
	var got []string
	if err := q.Read(0, 10, func(seq uint64, rec []byte) bool { got = append(got, fmt.Sprintf("%d:%s", seq, rec)); return true }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"3:r3", "4:r4", "5:r5", "6:r6"}; !slices.Equal(got, want) {
		t.Fatalf("queue s read %q, want %q", got, want)
	}
	got = nil
	if err := s.ReadBatch(b1, func(seq uint64, rec []byte) error { got = append(got, fmt.Sprintf("%d:%s", seq, rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1:r1", "2:r2"}; !slices.Equal(got, want) {
		t.Fatalf("b1 read %q, want %q", got, want)
	}

	if err := s.Ack(b1); err != nil {
		t.Fatal(err)
	}
	b2 := formBatch(t, q, "b2", 4)
	mustReadBatch(t, s, b2)
	if err := s.Ack(b2); err != nil {
		t.Fatal(err)
	}
	// Event 5 is still t's: its record stays until t's batch is acknowledged.
	if !stored(t, s, eventKey(5)) {
		t.Fatal("the record of event 5 went while t still holds it")
	}
	bt := formBatch(t, tq, "bt", 1)
	mustReadBatch(t, s, bt)
	if err := s.Ack(bt); err != nil {
		t.Fatal(err)
	}
	keys := storedKeys(t, s)
	for _, k := range []byte{'q', 'e', 'r', 'b'} {
		if left := keysOf(keys, k); len(left) != 0 {
			t.Fatalf("keys of kind %c left once everything is acknowledged: %q", k, left)
		}
	}
	if sh, rc := writerCounts(t, s); sh != 0 || rc != 0 {
		t.Fatalf("writer counts %d shared and %d records stored apart, want 0", sh, rc)
	}
}

// What the layout relies on is checked, not assumed: a batch is stored in
// its own subscriber's queue, above the head (entries below it belong to
// stored batches), and an event has a record (an empty entry would mean it
// is stored apart).
func TestLayoutRefusesMisuse(t *testing.T) {
	s := openStore(t, t.TempDir())
	q, other := openQueue(t, s, "s"), openQueue(t, s, "t")
	for _, rec := range []string{"r1", "r2", "r3"} {
		appendTo(t, s, rec, q)
	}
	formBatch(t, q, "b1", 2)
	huge := make([]uint64, s.w.maxCount/2+1)
	for i := range huge {
		huge[i] = uint64(3 + i)
	}
	for name, b := range map[string]*Batch{
		"another subscriber's":         {ID: "b2", Subscriber: "t", Seqs: []uint64{3}},
		"below the head":               {ID: "b3", Subscriber: "s", Seqs: []uint64{2, 3}},
		"out of order":                 {ID: "b4", Subscriber: "s", Seqs: []uint64{4, 3}},
		"too large to release at once": {ID: "b5", Subscriber: "s", Seqs: huge},
	} {
		if err := q.CreateBatch(b); err == nil {
			t.Errorf("a batch %s was stored", name)
		}
	}
	if err := s.Append([]AppendItem{{Record: nil, Queues: []*Queue{other}}}, make([]bool, 1)); err == nil {
		t.Error("an event without a record was stored")
	}
	// Nothing of the refused calls was stored: b1 is the only batch, and
	// event 3 is still queued.
	if bs := keysOf(storedKeys(t, s), 'b'); !slices.Equal(bs, []string{"bb1"}) {
		t.Fatalf("batches stored: %q, want only b1", bs)
	}
	var queued []uint64
	if err := q.Read(0, 10, func(seq uint64, _ []byte) bool { queued = append(queued, seq); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(queued, []uint64{3}) || other.Depth() != 0 {
		t.Fatalf("queued in s: %v (want [3]); depth of t %d (want 0)", queued, other.Depth())
	}
}

// A store records the layout that wrote it, and a build refuses a store
// of a later layout, which it could misread, with an error that says so.
func TestLayoutVersion(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if v := storedKeys(t, s)[string(layoutKey)]; len(v) != 8 || be.Uint64(v) != layout {
		t.Fatalf("layout key %x, want %d", v, layout)
	}
	q := openQueue(t, s, "s")
	appendTo(t, s, "r1", q)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(layoutKey, be.AppendUint64(nil, layout+1)) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir, MaxRequestBytes: 1 << 20, Logger: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), "newer hookbatch") {
		t.Fatalf("Open of a later layout: %v, want a refusal", err)
	}
	// The refusal changed nothing: back at this layout, the event is there.
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithValueThreshold(valueThreshold))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error { return txn.Set(layoutKey, be.AppendUint64(nil, layout)) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	var got []string
	if err := openQueue(t, s, "s").Read(0, 10, func(_ uint64, rec []byte) bool { got = append(got, string(rec)); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("queue read %q after the refusal, want [r1]", got)
	}
}
