package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// sampleEvery is the period of the time series drawn in the chart.
const sampleEvery = 250 * time.Millisecond

// Sample is one point of the time series: rates over the last period and
// the queue depth at its end (-1 when no relay or store was running).
type Sample struct {
	T               float64 `json:"t_s"`
	Scenario        string  `json:"scenario,omitempty"`
	IngestedPerSec  float64 `json:"ingested_per_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	QueueDepth      int64   `json:"queue_depth"`
}

// Segment is the time span of one measurement, for the chart's bands.
type Segment struct {
	Scenario string  `json:"scenario"`
	From     float64 `json:"from_s"`
	To       float64 `json:"to_s"`
}

// sampler records, every sampleEvery, how many events were acknowledged and
// delivered and how deep the queues are, across the whole run.
type sampler struct {
	start     time.Time
	ingested  atomic.Int64 // events acknowledged by ingest (or appended to storage)
	delivered atomic.Int64 // distinct events received by sinks

	mu       sync.Mutex
	label    string
	depth    func() (int64, error)
	samples  []Sample
	segments []Segment

	stop chan struct{}
	done chan struct{}
}

func newSampler() *sampler {
	s := &sampler{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *sampler) since() float64 { return time.Since(s.start).Seconds() }

// begin marks the start of a measurement; depth (may be nil) reads the
// queue depth of what it measures.
func (s *sampler) begin(label string, depth func() (int64, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.label, s.depth = label, depth
	s.segments = append(s.segments, Segment{Scenario: label, From: s.since()})
}

// end marks the end of the current measurement.
func (s *sampler) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.segments); n > 0 {
		s.segments[n-1].To = s.since()
	}
	s.label, s.depth = "", nil
}

func (s *sampler) run() {
	defer close(s.done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	last := time.Now()
	lastIn, lastOut := s.ingested.Load(), s.delivered.Load()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			in, out := s.ingested.Load(), s.delivered.Load()
			dt := now.Sub(last).Seconds()
			s.mu.Lock()
			label, depthFn := s.label, s.depth
			s.mu.Unlock()
			depth := int64(-1)
			if depthFn != nil {
				if d, err := depthFn(); err == nil {
					depth = d
				}
			}
			smp := Sample{
				T:               now.Sub(s.start).Seconds(),
				Scenario:        label,
				IngestedPerSec:  float64(in-lastIn) / dt,
				DeliveredPerSec: float64(out-lastOut) / dt,
				QueueDepth:      depth,
			}
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
			last, lastIn, lastOut = now, in, out
		}
	}
}

// close stops sampling and returns the series and segments.
func (s *sampler) close() ([]Sample, []Segment) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.segments
}
