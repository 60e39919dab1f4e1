package storage

import "github.com/dgraph-io/badger/v4"

// tx is the writer's open transaction as operations see it. Badger gives a
// transaction the snapshot it began with, and the writer begins the next
// transaction before it sends the commit before it (writer.send), so that
// snapshot misses the commit in flight. The keys operations look up before
// they write (dedup markers, batches, dead letters, reference counts,
// records stored apart) are therefore read through tx, which lays the
// transaction's own writes of them (building) over those of the commit in
// flight (unseen) over the snapshot.
type tx struct {
	txn              *badger.Txn
	building, unseen view
}

// view holds one transaction's writes to keys that are looked up.
type view map[string]viewed

type viewed struct {
	value []byte
	gone  bool
}

// lookedUp reports whether keys of k's kind are read inside the writer.
func lookedUp(k []byte) bool {
	switch k[0] {
	case 'd', 'b', 'x', 'r', 'e':
		return true
	}
	return false
}

func (t *tx) set(k, v []byte) error {
	return t.setEntry(badger.NewEntry(k, v))
}

func (t *tx) setEntry(e *badger.Entry) error {
	if err := t.txn.SetEntry(e); err != nil {
		return err
	}
	if lookedUp(e.Key) {
		t.building[string(e.Key)] = viewed{value: e.Value}
	}
	return nil
}

func (t *tx) del(k []byte) error {
	if err := t.txn.Delete(k); err != nil {
		return err
	}
	if lookedUp(k) {
		t.building[string(k)] = viewed{gone: true}
	}
	return nil
}

// get returns k's value (when value is set) as the transaction would
// commit it, or badger.ErrKeyNotFound.
func (t *tx) get(k []byte, value bool) ([]byte, error) {
	if !lookedUp(k) {
		panic("storage: the writer looked up a key of kind " + string(k[:1]) + ", which its view does not hold")
	}
	for _, v := range [...]view{t.building, t.unseen} {
		if e, ok := v[string(k)]; ok {
			if e.gone {
				return nil, badger.ErrKeyNotFound
			}
			return e.value, nil
		}
	}
	item, err := t.txn.Get(k)
	if err != nil || !value {
		return nil, err
	}
	return item.ValueCopy(nil)
}
