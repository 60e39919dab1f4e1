// Package relay runs hookbatch: the ingest and admin HTTP front ends, one
// batching loop per subscriber, and the delivery pools that POST batches to
// subscribers.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Relay is one running hookbatch. Create it with New, start it with Start,
// stop it with Close.
type Relay struct {
	cfg     config.Config
	log     zerolog.Logger
	version string

	store *storage.Store

	// routes is what ingest routes to: an immutable snapshot, replaced whole
	// by Reload. subs and byID also hold subscribers draining after their
	// removal; they change only under subsMu.
	routes  atomic.Pointer[routes]
	subsMu  sync.RWMutex
	subs    []*subscriber
	byID    map[string]*subscriber
	reload  sync.Mutex // one Reload at a time
	metrics *relayMetrics
	out     *outbound
	guard   *guard

	ingestSrv, adminSrv *fasthttp.Server
	ingestLn, adminLn   net.Listener

	closing atomic.Bool
	// bgMu orders the start of background deliveries (replays) with Close:
	// none starts once closing is set.
	bgMu sync.Mutex
	// claims holds the ids of the batches being delivered, each true once
	// a dispatch of it was turned away meanwhile (claim, unclaim).
	claimMu sync.Mutex
	claims  map[string]bool

	// dead counts the dead letters stored per subscriber id: read from
	// storage at start, then kept by whichever subscriber of that id
	// stores, replays or drops one, so a reload cannot lose a change.
	deadMu sync.Mutex
	dead   map[string]*atomic.Int64
	// pauses holds each subscriber id's pause: read from storage at start,
	// then changed only with what is stored (pause, resume).
	pauseMu sync.Mutex
	pauses  map[string]*pauseState

	// replays holds the replay of each subscriber's dead letters under way.
	replayMu sync.Mutex
	replays  map[string]*replayJob

	// life ends when shutdown begins: loops stop forming batches and
	// deliveries stop waiting for their next attempt.
	life     context.Context
	stopLife context.CancelFunc

	servers   sync.WaitGroup
	loops     sync.WaitGroup
	deliver   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New opens the store in cfg.DataDir and prepares every subscriber. Nothing
// listens until Start.
func New(cfg config.Config, log zerolog.Logger, version string) (*Relay, error) {
	g, err := newGuard(cfg.Ingest)
	if err != nil {
		return nil, err
	}
	r := &Relay{
		cfg:     cfg,
		log:     log,
		version: version,
		guard:   g,
		byID:    make(map[string]*subscriber, len(cfg.Subscribers)),
		claims:  make(map[string]bool),
		dead:    make(map[string]*atomic.Int64),
		pauses:  make(map[string]*pauseState),
		replays: make(map[string]*replayJob),
	}
	r.metrics = newRelayMetrics(r)
	store, err := storage.Open(storage.Options{
		Dir:             cfg.DataDir,
		SyncWrites:      cfg.Storage.SyncWrites,
		MaxDiskBytes:    int64(cfg.Storage.MaxDiskBytes),
		DedupWindow:     cfg.Ingest.DedupWindow,
		MaxRequestBytes: int(cfg.Ingest.MaxBodyBytes),
		// Each event writes its record, a dedup key, a reference count
		// and one queue entry per subscriber.
		// Room for 8 subscribers at least, so that a reload adding some
		// does not make valid requests too large.
		MaxRequestEntries: cfg.Ingest.MaxEventsPerRequest * (3 + max(len(cfg.Subscribers), 8)),
		Logger:            log,
		OnCommit:          r.metrics.committed,
	})
	if err != nil {
		return nil, err
	}
	r.store = store
	r.life, r.stopLife = context.WithCancel(context.Background())
	r.out = newOutbound(r)
	if err := r.addSubscribers(); err != nil {
		_ = store.Close()
		return nil, err
	}
	r.ingestSrv = r.newIngestServer()
	r.adminSrv = r.newAdminServer()
	return r, nil
}

// routes is the set of subscribers ingest routes events to.
type routes struct {
	list []*subscriber
	byID map[string]*subscriber
	// mu is read-locked by each ingest request for as long as it routes
	// and stores with these routes; Reload write-locks a replaced table to
	// wait for them.
	mu sync.RWMutex
}

// currentRoutes read-locks and returns the routes in force.
func (r *Relay) currentRoutes() *routes {
	for {
		rt := r.routes.Load()
		rt.mu.RLock()
		if r.routes.Load() == rt {
			return rt
		}
		rt.mu.RUnlock() // replaced meanwhile: use the new table
	}
}

// publishLocked makes the active (not draining) subscribers ingest's routes.
func (r *Relay) publishLocked() {
	rt := &routes{byID: make(map[string]*subscriber, len(r.subs))}
	for _, s := range r.subs {
		if !s.draining.Load() {
			rt.list = append(rt.list, s)
			rt.byID[s.cfg.ID] = s
		}
	}
	r.routes.Store(rt)
}

// subscriber returns the subscriber id, active or draining, or nil.
func (r *Relay) subscriber(id string) *subscriber {
	r.subsMu.RLock()
	defer r.subsMu.RUnlock()
	return r.byID[id]
}

// subscribers returns every subscriber, active or draining.
func (r *Relay) subscribers() []*subscriber {
	r.subsMu.RLock()
	defer r.subsMu.RUnlock()
	return slices.Clone(r.subs)
}

// stored is what storage holds about subscribers' batches, read at start
// and at each reload: those awaiting delivery.
type stored struct {
	batches map[string][]*storage.Batch
	total   int // batches awaiting delivery
}

func (r *Relay) loadStored() (stored, error) {
	var st stored
	pending, err := r.store.Batches()
	if err != nil {
		return st, err
	}
	st.total = len(pending)
	st.batches = make(map[string][]*storage.Batch)
	for _, b := range pending {
		st.batches[b.Subscriber] = append(st.batches[b.Subscriber], b)
	}
	return st, nil
}

// deadCounter returns the dead-letter count of subscriber id.
func (r *Relay) deadCounter(id string) *atomic.Int64 {
	r.deadMu.Lock()
	defer r.deadMu.Unlock()
	c := r.dead[id]
	if c == nil {
		c = new(atomic.Int64)
		r.dead[id] = c
	}
	return c
}

// hasDeadLetters reports whether dead letters of subscriber id are stored,
// configured or not.
func (r *Relay) hasDeadLetters(id string) bool {
	r.deadMu.Lock()
	defer r.deadMu.Unlock()
	c := r.dead[id]
	return c != nil && c.Load() > 0
}

// pauseOf returns the pause state of subscriber id.
func (r *Relay) pauseOf(id string) *pauseState {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	p := r.pauses[id]
	if p == nil {
		p = new(pauseState)
		r.pauses[id] = p
	}
	return p
}

func (r *Relay) addSubscribers() error {
	dead, err := r.store.DeadLetterCounts()
	if err != nil {
		return err
	}
	for id, n := range dead {
		r.deadCounter(id).Store(int64(n))
	}
	paused, err := r.store.Paused()
	if err != nil {
		return err
	}
	for id, reason := range paused {
		p := r.pauseOf(id)
		p.mu.Lock()
		p.setLocked(reason)
		p.mu.Unlock()
	}
	for i := range r.cfg.Subscribers {
		s, err := newSubscriber(r, r.cfg.Subscribers[i])
		if err != nil {
			return err
		}
		if paused, reason, _ := s.paused.get(); paused {
			s.log.Warn().Str("reason", reason).Msg("subscriber paused")
		}
		r.subs = append(r.subs, s)
		r.byID[s.cfg.ID] = s
	}
	r.publishLocked()
	return nil
}

// Start opens both listeners and starts delivery. Batches stored before a
// restart are delivered first, with their ids.
func (r *Relay) Start() error {
	var err error
	if r.ingestLn, err = net.Listen("tcp", r.cfg.Listen); err != nil {
		return fmt.Errorf("cannot listen on %s: %w", r.cfg.Listen, err)
	}
	if r.cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.cfg.TLS.CertFile, r.cfg.TLS.KeyFile)
		if err != nil {
			_ = r.ingestLn.Close()
			return fmt.Errorf("cannot load TLS certificate: %w", err)
		}
		r.ingestLn = tls.NewListener(r.ingestLn, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	var allowed func(netip.Addr) bool
	if len(r.guard.allow) > 0 {
		allowed = r.guard.allowed
	}
	r.ingestLn = newPerIPListener(r.ingestLn, ingestMaxConnsPerIP, allowed, r.metrics.ingestRequest)
	if r.adminLn, err = net.Listen("tcp", r.cfg.AdminListen); err != nil {
		_ = r.ingestLn.Close()
		return fmt.Errorf("cannot listen on %s: %w", r.cfg.AdminListen, err)
	}
	st, err := r.loadStored()
	if err != nil {
		_ = r.ingestLn.Close()
		_ = r.adminLn.Close()
		return err
	}
	r.reportUnconfigured(st)
	for _, s := range r.subs {
		s.start(st.batches[s.cfg.ID])
	}
	r.servers.Add(2)
	go r.serve(r.ingestSrv, r.ingestLn)
	go r.serve(r.adminSrv, r.adminLn)
	r.log.Info().Str("listen", r.IngestAddr()).Str("admin_listen", r.AdminAddr()).
		Int("subscribers", len(r.subs)).Int("recovered_batches", st.total).Msg("hookbatch started")
	return nil
}

// reportUnconfigured logs the subscribers that are no longer configured but
// still hold events (the relay stopped before a removed subscriber
// drained): those are kept, and delivered if the subscriber comes back.
func (r *Relay) reportUnconfigured(st stored) {
	ids, err := r.store.QueueIDs()
	if err != nil {
		r.log.Error().Err(err).Msg("cannot look for events of subscribers no longer configured")
	}
	for sub := range st.batches {
		ids = append(ids, sub)
	}
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		if _, ok := r.byID[id]; ok {
			continue
		}
		ev := r.log.Warn().Str("subscriber", id).Int("batches", len(st.batches[id]))
		if q, err := r.store.Queue(id); err == nil {
			ev = ev.Int64("events", q.Depth())
		}
		ev.Msg("events of a subscriber no longer configured: kept, not delivered; configure it again to deliver them")
	}
}

func (r *Relay) serve(srv *fasthttp.Server, ln net.Listener) {
	defer r.servers.Done()
	if err := srv.Serve(ln); err != nil {
		r.log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("server stopped")
	}
}

// IngestAddr is the address the ingest listener is bound to.
func (r *Relay) IngestAddr() string { return addrOf(r.ingestLn) }

// AdminAddr is the address the admin listener is bound to.
func (r *Relay) AdminAddr() string { return addrOf(r.adminLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// Close shuts down in order: ingest stops (503 to new requests, in-flight
// ones finish), batching loops flush what they hold, in-flight deliveries
// finish until ctx ends (then their connections are cut; the batches stay
// stored and are delivered after a restart), and storage closes. It is safe
// to call more than once.
func (r *Relay) Close(ctx context.Context) error {
	r.closeOnce.Do(func() { r.closeErr = r.close(ctx) })
	return r.closeErr
}

func (r *Relay) close(ctx context.Context) error {
	var errs []error
	// Ingest answers 503 with Retry-After from here on, while deliveries
	// drain; its listener closes last, once nothing else is running.
	r.bgMu.Lock()
	r.closing.Store(true)
	r.bgMu.Unlock()
	r.stopLife()
	for _, s := range r.subscribers() {
		s.stopParked()
	}
	r.loops.Wait()
	done := make(chan struct{})
	go func() { r.deliver.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn().Msg("shutdown timeout: cutting in-flight deliveries; their batches stay stored")
		r.out.abort()
		<-done
	}
	r.out.close()
	for _, srv := range []struct {
		s  *fasthttp.Server
		ln net.Listener
	}{{r.ingestSrv, r.ingestLn}, {r.adminSrv, r.adminLn}} {
		if srv.ln == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := srv.s.ShutdownWithContext(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, fmt.Errorf("shutdown of %s: %w", srv.ln.Addr(), err))
		}
		cancel()
		// Shutdown closes only the listeners Serve has taken: a relay
		// closed right after Start may have a Serve not yet running,
		// which would then accept forever.
		_ = srv.ln.Close()
	}
	r.servers.Wait()
	if err := r.store.Close(); err != nil {
		errs = append(errs, err)
	}
	r.metrics.unregister()
	return errors.Join(errs...)
}

// hostOf returns the host:port a subscriber URL dials, for per-host limits.
func hostOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	// Host names are case-insensitive: one breaker and one limit per host.
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
}
