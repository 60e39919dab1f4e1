package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/hookbatch/hookbatch/storage"
	"github.com/valyala/fasthttp"
)

// errRefusedDestination marks a dial the SSRF guard refused.
var errRefusedDestination = errors.New("destination refused")

// outbound is the delivery pool: one fasthttp client whose connection pool
// per host matches per_host_concurrency, a global limit on requests in
// flight, and one host (limit and circuit breaker) per destination.
type outbound struct {
	r      *Relay
	client *fasthttp.Client
	global chan struct{} // one token per request in flight
	ua     string

	mu      sync.Mutex
	hosts   map[string]*host
	conns   map[net.Conn]struct{} // open connections, cut by abort
	aborted atomic.Bool
}

func newOutbound(r *Relay) *outbound {
	d := r.cfg.Delivery
	o := &outbound{
		r:      r,
		global: make(chan struct{}, d.Concurrency),
		hosts:  make(map[string]*host),
		conns:  make(map[net.Conn]struct{}),
		ua:     d.UserAgent,
	}
	if o.ua == "" {
		o.ua = "hookbatch/" + r.version
	}
	o.client = &fasthttp.Client{
		Dial:                     o.dial,
		MaxConnsPerHost:          d.PerHostConcurrency,
		MaxConnWaitTimeout:       d.Timeout,
		MaxIdleConnDuration:      30 * time.Second,
		ReadTimeout:              d.Timeout,
		WriteTimeout:             d.Timeout,
		MaxResponseBodySize:      1 << 20,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		RetryIfErr:               func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	return o
}

// host is one destination host:port: its in-flight limit and circuit breaker.
type host struct {
	addr    string
	sem     chan struct{}
	openFor time.Duration // circuit_breaker.open_duration

	mu       sync.Mutex
	state    circuitState
	failures int
	openedAt time.Time
	probing  bool
	probes   uint64 // probes let through so far: each one's number
}

type circuitState uint8

const (
	circuitClosed circuitState = iota
	circuitOpen
	circuitHalfOpen
)

func (c circuitState) String() string {
	switch c {
	case circuitOpen:
		return "open"
	case circuitHalfOpen:
		return "half_open"
	}
	return "closed"
}

func (o *outbound) host(addr string) *host {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.hosts[addr]
	if h == nil {
		h = &host{addr: addr, sem: make(chan struct{}, o.r.cfg.Delivery.PerHostConcurrency),
			openFor: o.r.cfg.Delivery.CircuitBreaker.OpenDuration}
		o.hosts[addr] = h
		o.r.metrics.registerHost(h)
	}
	return h
}

// allow reports whether a request may go to the host now; when not, wait is
// how long until it may be asked again. After open_duration one request
// (the probe) is let through in the half-open state: probe is its number
// (0 for any other request), and it must report its outcome, or abandon
// it if it is not sent.
func (h *host) allow(now time.Time) (ok bool, probe uint64, wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case circuitClosed:
		return true, 0, 0
	case circuitOpen:
		if left := h.openFor - now.Sub(h.openedAt); left > 0 {
			return false, 0, left
		}
		h.state = circuitHalfOpen
	}
	if h.probing {
		return false, 0, halfOpenWait
	}
	h.probing = true
	h.probes++
	return true, h.probes, 0
}

// abandon gives probe back unsent (its subscriber stopped while it waited
// for a slot, or the SSRF guard refused it), so that another request may
// probe the host. A later probe's turn is not ended by an earlier one.
func (h *host) abandon(probe uint64) {
	if probe == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == circuitHalfOpen && h.probes == probe {
		h.probing = false
	}
}

// report feeds an attempt's outcome to the breaker: threshold consecutive
// failures open it, a failed probe reopens it, any success closes it.
func (h *host) report(failed bool, now time.Time, threshold int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !failed {
		h.state, h.failures, h.probing = circuitClosed, 0, false
		return
	}
	h.failures++
	if h.state == circuitHalfOpen || h.failures >= threshold {
		h.state, h.openedAt, h.probing = circuitOpen, now, false
	}
}

// halfOpenWait is how long a request kept back by another's probe waits
// before it asks again.
const halfOpenWait = 100 * time.Millisecond

// shut reports whether the circuit keeps back a request that is not the
// probe, and for how long: it may have opened while the request waited
// for its slots.
func (h *host) shut(now time.Time) (wait time.Duration, shut bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case circuitClosed:
		return 0, false
	case circuitOpen:
		return max(h.openFor-now.Sub(h.openedAt), 0), true
	}
	return halfOpenWait, true // half-open: another request is the probe
}

// circuit reports the breaker's state as of now: once open_duration has
// passed an open circuit lets a probe through, half-open, even before a
// request asks (which is when allow moves it), so that a host no request
// goes to any more does not read open for good.
func (h *host) circuit(now time.Time) circuitState {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == circuitOpen && now.Sub(h.openedAt) >= h.openFor {
		return circuitHalfOpen
	}
	return h.state
}

// errPausedMeanwhile and errHeldMeanwhile: the subscriber was paused, or
// held back by a Retry-After, while an attempt waited for its slots, so
// nothing was sent.
var (
	errPausedMeanwhile = errors.New("subscriber paused")
	errHeldMeanwhile   = errors.New("subscriber asked to wait (Retry-After)")
)

// attempt POSTs body to s once, within the global and per-host limits, and
// counts it in b.Attempts. ok is false when the breaker kept the request
// back, also when it opened while the request waited for its slots (no
// attempt is used up; wait says for how long), shutdown came while it
// waited, or a pause or a Retry-After did (res.err errPausedMeanwhile,
// errHeldMeanwhile).
func (o *outbound) attempt(s *subscriber, b *storage.Batch, body []byte) (res result, ok bool, wait time.Duration) {
	cb := &o.r.cfg.Delivery.CircuitBreaker
	ok, probe, wait := s.host.allow(time.Now())
	if !ok {
		return result{}, false, wait
	}
	// The host's slot first: a batch waiting for a slow host must not hold
	// one of the global slots other hosts need.
	if !take(s.host.sem, s.life, o.r.metrics.limitWaits[limitHost]) {
		s.host.abandon(probe)
		return result{}, false, 0
	}
	if !take(o.global, s.life, o.r.metrics.limitWaits[limitGlobal]) {
		<-s.host.sem
		s.host.abandon(probe)
		return result{}, false, 0
	}
	// The answers that freed the slots may have opened the circuit, set a
	// Retry-After hold or paused the subscriber (a 410) meanwhile.
	var held error
	shut, slotted := false, time.Now()
	if probe == 0 {
		wait, shut = s.host.shut(slotted)
	}
	switch paused, _, _ := s.paused.get(); {
	case paused:
		held = errPausedMeanwhile
	case slotted.UnixNano() < s.notBefore.Load():
		held = errHeldMeanwhile
	}
	if shut || held != nil {
		<-o.global
		<-s.host.sem
		s.host.abandon(probe)
		return result{err: held}, false, wait
	}
	b.Attempts++
	s.inflight.Add(1)
	o.r.metrics.hostInflight(s.host.addr, 1)
	defer func() {
		o.r.metrics.hostInflight(s.host.addr, -1)
		s.inflight.Add(-1)
		<-o.global
		<-s.host.sem
	}()

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	s.buildRequest(req, b, body, o.ua, time.Now())
	start := time.Now()
	err := o.client.DoTimeout(req, resp, o.r.cfg.Delivery.Timeout)
	now := time.Now()
	s.metrics.deliveryDuration.Update(now.Sub(start).Seconds())
	if errors.Is(err, fasthttp.ErrBodyTooLarge) && resp.StatusCode() != 0 {
		err = nil // the status came; only the answer's body was too long to read
	}
	if err != nil {
		res.err = err
	} else {
		res.status = resp.StatusCode()
		if res.status == fasthttp.StatusTooManyRequests || res.status == fasthttp.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Peek("Retry-After"), now)
			if res.retryAfter > 0 {
				// Retry-After speaks for the subscriber, not this batch
				// (whether it is retried or dead-lettered): its other
				// batches wait too, those waiting for these slots included.
				s.holdUntil(now.Add(min(res.retryAfter, o.r.cfg.Delivery.Retry.MaxBackoff)).UnixNano())
			}
		}
	}
	if errors.Is(err, errRefusedDestination) {
		s.host.abandon(probe) // a refusal says nothing about the host's health
		return res, true, 0
	}
	failed := err != nil || res.status >= 500 || res.status == fasthttp.StatusRequestTimeout
	s.host.report(failed, now, cb.FailureThreshold)
	if err == nil && res.status == fasthttp.StatusGone {
		// Paused before the slots are given back, so that a batch waiting
		// for them finds the pause (deliver's own call is then a no-op).
		if err := s.pause(goneReason); err != nil {
			s.log.Error().Err(err).Msg("cannot store pause")
		}
	}
	return res, true, 0
}

// dial connects to addr, refusing private destinations unless allowed. The
// check runs on the address actually dialled, after resolution, so DNS
// rebinding cannot get around it.
func (o *outbound) dial(addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: o.r.cfg.Delivery.Timeout}
	if !o.r.cfg.Delivery.AllowPrivateNetworks {
		d.Control = refusePrivate
	}
	if o.aborted.Load() {
		return nil, errors.New("delivery is shutting down")
	}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	if o.conns == nil { // closed
		o.mu.Unlock()
		_ = c.Close()
		return nil, errors.New("delivery is shutting down")
	}
	o.conns[c] = struct{}{}
	o.mu.Unlock()
	return &trackedConn{Conn: c, o: o}, nil
}

func refusePrivate(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", errRefusedDestination, address)
	}
	if isPrivate(ap.Addr()) {
		return fmt.Errorf("%w: %s is a private, loopback or link-local address (delivery.allow_private_networks is false)", errRefusedDestination, ap.Addr())
	}
	return nil
}

var privatePrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "240.0.0.0/4",
		"::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "64:ff9b::/96", "2001:db8::/32",
		"2001::/32", "2002::/16", // Teredo and 6to4 can carry private IPv4 addresses
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// isPrivate reports whether a is not a public unicast address.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range privatePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// trackedConn removes itself from the open set when closed.
type trackedConn struct {
	net.Conn
	o    *outbound
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.o.mu.Lock()
		delete(c.o.conns, c.Conn)
		c.o.mu.Unlock()
	})
	return c.Conn.Close()
}

// abort cuts every open connection, failing the requests in flight, and
// refuses new ones.
func (o *outbound) abort() {
	o.aborted.Store(true)
	o.mu.Lock()
	defer o.mu.Unlock()
	for c := range o.conns {
		_ = c.Close()
	}
}

// close cuts every connection and refuses new ones.
func (o *outbound) close() {
	o.abort()
	o.mu.Lock()
	o.conns = nil
	o.mu.Unlock()
	o.client.CloseIdleConnections()
}

// buildRequest writes the batch POST of DESIGN §6 into req.
func (s *subscriber) buildRequest(req *fasthttp.Request, b *storage.Batch, body []byte, ua string, now time.Time) {
	req.Header.DisableNormalizing() // header names go out as DESIGN §6 writes them
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(s.cfg.URL)
	h := &req.Header
	h.SetContentType("application/json")
	h.SetUserAgent(ua)
	h.Set("X-Webhook-Batch", "true")
	h.Set("X-Webhook-Batch-Id", b.ID)
	h.Set("X-Webhook-Batch-Count", strconv.Itoa(len(b.Seqs)))
	h.Set("X-Webhook-Attempt", strconv.Itoa(b.Attempts))
	sig := s.signer.AppendHex(make([]byte, 0, 80), body)
	h.SetBytesV("X-Webhook-Signature", sig)
	ts := now.Unix()
	h.Set("webhook-id", b.ID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	sig = s.signer.AppendStandard(sig[:0], []byte(b.ID), ts, body)
	h.SetBytesV("webhook-signature", sig)
	for k, v := range s.cfg.Headers {
		h.Set(k, v)
	}
	req.SetBodyRaw(body)
}

// take puts a token in sem, counting in waits each time the bound is hit
// (sem full), or reports false when life ends first.
func take(sem chan struct{}, life context.Context, waits *metrics.Counter) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
	}
	waits.Inc()
	select {
	case sem <- struct{}{}:
		return true
	case <-life.Done():
		return false
	}
}
