package relay

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hookbatch/hookbatch/sink"
)

// TestUnreadableEventsAreDeadLettered corrupts two stored event records
// behind a stopped relay (a real Badger, opened directly). After the
// restart the subscriber is not stuck: an unreadable event still queued
// leaves the queue as a batch of its own, a formed batch holding one is
// dead-lettered whole, each with the reason, and every other event is
// delivered. (The corrupted queued event is the last: at the stop the
// open batch, e3 and e4, may have been stored or not, depending on which
// of the loop and the ending delivery moves first.)
func TestUnreadableEventsAreDeadLettered(t *testing.T) {
	s := startSink(t, sink.Options{})
	sc := sub("s", s.URL(), 2, 20*time.Millisecond)
	sc.Ordered = true // a window of one batch: while paused, later events stay queued
	cfg := testConfig(t, sc)

	r := openRelay(t, cfg, testLogger(t))
	adminJSON(t, r, "POST", "/v1/subscribers/s/pause", 200, nil)
	for i := 1; i <= 6; i++ { // sequence numbers 1 to 6
		mustIngest(t, r, "/v1/events", fmt.Sprintf(`{"id":"e%d","type":"order.created","data":{"n":%d}}`, i, i))
	}
	waitFor(t, 5*time.Second, "e1 and e2 formed into a batch, the rest queued", func() bool {
		v := subscriberState(t, r, "s")
		return v.InFlightBatches == 1 && v.QueuedEvents == 6
	})
	stopRelay(t, r)

	db, err := badger.Open(badger.DefaultOptions(cfg.DataDir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, seq := range []uint64{2, 6} { // e2 in the formed batch, e6 queued
			// The queue entry of an event of one subscriber holds its record.
			if err := txn.Set(binary.BigEndian.AppendUint64([]byte("qs\x00"), seq), []byte("not a record")); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	r = startRelay(t, cfg)
	adminJSON(t, r, "POST", "/v1/subscribers/s/resume", 200, nil)
	waitFor(t, 10*time.Second, "e3, e4 and e5 delivered and two dead letters", func() bool {
		got := eventsOf(s)
		return got["e3"] == 1 && got["e4"] == 1 && got["e5"] == 1 && subscriberState(t, r, "s").DeadLetterBatches == 2
	})
	if got := eventsOf(s); len(got) != 3 {
		t.Errorf("sink got %v, want e3, e4 and e5 once each", got)
	}
	var dead []struct {
		Count     int    `json:"count"`
		LastError string `json:"last_error"`
	}
	adminJSON(t, r, "GET", "/v1/dead-letters?subscriber=s", 200, &dead)
	want := map[int]string{2: "event 2: ", 1: "event 6: "} // by count
	for _, d := range dead {
		w, ok := want[d.Count]
		if !ok || !strings.Contains(d.LastError, "cannot read the batch's events: "+w) || !strings.Contains(d.LastError, "corrupt") {
			t.Errorf("dead letter of %d events: %q", d.Count, d.LastError)
		}
		delete(want, d.Count)
	}
	if len(want) != 0 {
		t.Errorf("dead letters %+v, want one of e1+e2 and one of e6", dead)
	}
	if v := subscriberState(t, r, "s"); v.QueuedEvents != 0 || v.InFlightBatches != 0 {
		t.Errorf("after: %+v, want nothing queued or in flight", v)
	}
}
