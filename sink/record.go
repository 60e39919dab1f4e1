package sink

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// count records an accepted delivery and reports whether its batch id was
// seen before, in which case it is a duplicate: kept in the history, not
// counted again.
func (s *Sink) count(b *Batch) (duplicate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entry := *b
	if !s.opts.KeepEvents {
		entry.Events, entry.Body = nil, nil
	}
	if !s.seen.add(b.ID) {
		b.Duplicate, entry.Duplicate = true, true
		s.stats.DuplicateBatches++
		s.history.add(entry)
		return true
	}
	s.stats.Batches++
	s.stats.Events += int64(b.Count)
	s.history.add(entry)
	if s.opts.KeepEvents {
		s.kept = append(s.kept, entry)
		s.events = append(s.events, b.Events...)
	}
	return false
}

// refused counts a delivery answered with an error status.
func (s *Sink) refused(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch status {
	case 401:
		s.stats.Rejected++
	default:
		s.stats.Invalid++
	}
}

// failed counts a delivery failed on purpose.
func (s *Sink) failed() {
	s.mu.Lock()
	s.stats.Failed++
	s.mu.Unlock()
}

// logf writes one line to Options.Log, if set, prefixed with the time of day.
func (s *Sink) logf(format string, args ...any) {
	if s.opts.Log == nil {
		return
	}
	line := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...) + "\n"
	s.logMu.Lock()
	defer s.logMu.Unlock()
	_, _ = io.WriteString(s.opts.Log, line)
}

// printable returns s as it is when it is plain printable ASCII, else quoted,
// so that what a client sent cannot forge log lines.
func printable(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// ring keeps the last size deliveries. Its buffer grows up to size, then the
// oldest entry (at next) is overwritten.
type ring struct {
	buf  []Batch
	size int
	next int // when full: index of the oldest entry, where the next one goes
}

func newRing(size int) ring { return ring{size: size} }

func (r *ring) add(b Batch) {
	switch {
	case r.size == 0:
	case len(r.buf) < r.size:
		r.buf = append(r.buf, b)
	default:
		r.buf[r.next] = b
		r.next = (r.next + 1) % r.size
	}
}

func (r *ring) len() int { return len(r.buf) }

// appendTo appends the entries to dst, oldest first.
func (r *ring) appendTo(dst []Batch) []Batch {
	dst = append(dst, r.buf[r.next:]...)
	return append(dst, r.buf[:r.next]...)
}

func (r *ring) reset() { r.buf, r.next = nil, 0 }

// seenSet remembers the last size batch ids, forgetting the oldest first.
type seenSet struct {
	ids   map[string]struct{}
	order []string // FIFO of the ids in ids; grows up to size
	size  int
	next  int // when full: index of the oldest id
}

func newSeenSet(size int) seenSet {
	return seenSet{ids: make(map[string]struct{}), size: size}
}

// add remembers id and reports whether it was new.
func (s *seenSet) add(id string) bool {
	if _, ok := s.ids[id]; ok {
		return false
	}
	if len(s.order) < s.size {
		s.order = append(s.order, id)
	} else {
		delete(s.ids, s.order[s.next])
		s.order[s.next] = id
		s.next = (s.next + 1) % s.size
	}
	s.ids[id] = struct{}{}
	return true
}

func (s *seenSet) reset() { *s = newSeenSet(s.size) }
