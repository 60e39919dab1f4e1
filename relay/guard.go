package relay

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/signing"
	"github.com/valyala/fasthttp"
)

// signatureTolerance is how far a Standard Webhooks webhook-timestamp may be
// from now, either way, before a request is refused as a possible replay.
const signatureTolerance = 5 * time.Minute

// Rate limiter bounds. The map of client buckets never holds more than
// maxRateClients entries; entries idle long enough to have refilled are
// dropped whenever a shard is swept.
const (
	rateShards     = 16
	maxRateClients = 16384
	rateSweepEvery = time.Minute
)

// The 401 answers. None of them holds a secret, a token or what the client
// presented.
var (
	errBadToken = errorf(fasthttp.StatusUnauthorized, "missing or invalid bearer token")
	errNoSig    = errorf(fasthttp.StatusUnauthorized, "missing signature: send X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body> or the Standard Webhooks headers webhook-id, webhook-timestamp and webhook-signature")
	errSigMatch = errorf(fasthttp.StatusUnauthorized, "signature does not match")
	errSigStale = errorf(fasthttp.StatusUnauthorized, "signature timestamp outside the 5 minute tolerance")
	errSigTS    = errorf(fasthttp.StatusUnauthorized, "webhook-timestamp is not unix seconds")
	errSigID    = errorf(fasthttp.StatusUnauthorized, "webhook-id is missing")
	errSigNoV1  = errorf(fasthttp.StatusUnauthorized, "webhook-signature holds no v1 signature")
	errSigParts = errorf(fasthttp.StatusUnauthorized, "incomplete Standard Webhooks signature: webhook-id, webhook-timestamp and webhook-signature are all required")
	errNotAllow = errorf(fasthttp.StatusForbidden, "client address is not in ingest.allow_cidrs")
	errNoAddr   = errorf(fasthttp.StatusForbidden, "client address unknown")
)

// guard holds ingest's client checks: address allow-list, per-client rate
// limit and producer authentication. It is immutable once made, apart from
// the rate limiter's own state, and safe for concurrent use.
type guard struct {
	allow    []netip.Prefix      // empty: every address
	tokens   [][sha256.Size]byte // SHA-256 of each accepted bearer token
	verifier *signing.Verifier   // nil: no signature required
	limiter  *rateLimiter        // nil: no rate limit
	now      func() time.Time
}

func newGuard(cfg config.Ingest) (*guard, error) {
	g := &guard{now: time.Now}
	for i, s := range cfg.AllowCIDRs {
		p, err := parseAllow(s)
		if err != nil {
			return nil, fmt.Errorf("invalid ingest.allow_cidrs[%d]: %w", i, err)
		}
		g.allow = append(g.allow, p)
	}
	for i, tok := range cfg.AuthTokens {
		if tok == "" {
			// Skipping it could leave no token and so turn auth off.
			return nil, fmt.Errorf("invalid ingest.auth_tokens[%d]: empty token", i)
		}
		g.tokens = append(g.tokens, sha256.Sum256([]byte(tok)))
	}
	if cfg.SigningSecret != "" {
		v, err := signing.NewVerifier(cfg.SigningSecret)
		if err != nil {
			// signing's errors never hold the secret.
			return nil, fmt.Errorf("invalid ingest.signing_secret: %w", err)
		}
		g.verifier = v
	}
	rl := cfg.RateLimit
	if rl.PerClientRPS < 0 || math.IsNaN(rl.PerClientRPS) {
		return nil, errors.New("invalid ingest.rate_limit.per_client_rps: must be 0 (off) or more")
	}
	if rl.PerClientRPS > 0 && !math.IsInf(rl.PerClientRPS, 1) {
		g.limiter = newRateLimiter(rl.PerClientRPS, rl.Burst, maxRateClients)
	}
	return g, nil
}

// parseAllow reads a CIDR prefix or a single address. An IPv4-mapped IPv6
// prefix (::ffff:10.0.0.0/104) is turned into its IPv4 form, as clients are
// matched by their unmapped address.
func parseAllow(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(s); err == nil {
		p = netip.PrefixFrom(a, a.BitLen())
	} else if p, err = netip.ParsePrefix(s); err != nil {
		return netip.Prefix{}, errors.New("not a CIDR prefix or IP address")
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("not a CIDR prefix or IP address")
	}
	return p.Masked(), nil
}

// clientAddr is the address of the TCP peer, unmapped and without a zone
// (prefixes never contain a zoned address). Forwarding headers
// (X-Forwarded-For) are not trusted: nothing configures which proxies may
// set them.
func clientAddr(ctx *fasthttp.RequestCtx) (netip.Addr, bool) {
	a := peerAddr(ctx.RemoteAddr())
	if !a.IsValid() {
		a, _ = netip.AddrFromSlice(ctx.RemoteIP())
		a = a.Unmap()
	}
	return a, a.IsValid()
}

// peerAddr is a TCP peer's address, unmapped and without a zone (prefixes
// never contain a zoned address); invalid for other kinds of address.
func peerAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// admit checks the client address (403) and its rate limit (429) before any
// work is done for the request.
func (g *guard) admit(ctx *fasthttp.RequestCtx) *httpError {
	if len(g.allow) == 0 && g.limiter == nil {
		return nil
	}
	addr, ok := clientAddr(ctx)
	if len(g.allow) > 0 {
		if !ok {
			return errNoAddr
		}
		if !g.allowed(addr) {
			return errNotAllow
		}
	}
	if g.limiter != nil {
		if wait := g.limiter.take(rateKey(addr), g.now()); wait > 0 {
			return &httpError{
				status:     fasthttp.StatusTooManyRequests,
				msg:        "rate limit of ingest.rate_limit.per_client_rps exceeded for this client address",
				retryAfter: retryAfterSeconds(wait),
			}
		}
	}
	return nil
}

func (g *guard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// retryAfterSeconds rounds wait up to whole seconds, at least 1.
func retryAfterSeconds(wait time.Duration) int {
	s := int(math.Ceil(wait.Seconds()))
	return max(s, 1)
}

// rateKey is the rate-limited unit for a client address: the address
// itself for IPv4, its /64 for IPv6 (a single host commonly holds a whole
// /64, so limiting per address would let it rotate through them).
func rateKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// authenticate checks the bearer token and the body signature (401).
func (g *guard) authenticate(ctx *fasthttp.RequestCtx, body []byte) *httpError {
	h := &ctx.Request.Header
	if len(g.tokens) > 0 && !g.tokenOK(h.Peek(fasthttp.HeaderAuthorization)) {
		return errBadToken
	}
	if g.verifier != nil {
		return g.signatureOK(h, body)
	}
	return nil
}

// bearer returns the token of an "Authorization: Bearer <token>" value;
// the scheme is case-insensitive (RFC 9110 §11.1).
func bearer(auth []byte) ([]byte, bool) {
	const scheme = "Bearer "
	if len(auth) <= len(scheme) || !bytes.EqualFold(auth[:len(scheme)], []byte(scheme)) {
		return nil, false
	}
	return bytes.TrimSpace(auth[len(scheme):]), true
}

// tokenOK reports whether auth is "Bearer <token>" for a configured token.
// SHA-256 digests are compared, so that neither the length of a token nor
// which one matched shows in the time taken: every token is compared.
func (g *guard) tokenOK(auth []byte) bool {
	token, ok := bearer(auth)
	if !ok {
		return false
	}
	got := sha256.Sum256(token)
	match := 0
	for i := range g.tokens {
		match |= subtle.ConstantTimeCompare(got[:], g.tokens[i][:])
	}
	return match == 1
}

// signatureOK checks the signature schemes the request carries: at least
// one is required, and each one present must verify. The Standard Webhooks
// scheme also bounds the timestamp, which refuses replays.
func (g *guard) signatureOK(h *fasthttp.RequestHeader, body []byte) *httpError {
	hexSig := h.Peek("X-Webhook-Signature")
	id, ts, std := h.Peek("webhook-id"), h.Peek("webhook-timestamp"), h.Peek("webhook-signature")
	if len(hexSig) == 0 && len(std) == 0 {
		if len(id) > 0 || len(ts) > 0 {
			return errSigParts
		}
		return errNoSig
	}
	if len(hexSig) > 0 && !g.verifier.VerifyHex(hexSig, body) {
		return errSigMatch
	}
	if len(std) == 0 {
		return nil
	}
	switch err := g.verifier.VerifyStandard(id, ts, std, body, g.now(), signatureTolerance); {
	case err == nil:
		return nil
	case errors.Is(err, signing.ErrTimestampOutOfRange):
		return errSigStale
	case errors.Is(err, signing.ErrBadTimestamp):
		if len(ts) == 0 {
			return errSigParts
		}
		return errSigTS
	case errors.Is(err, signing.ErrNoID):
		return errSigID
	case errors.Is(err, signing.ErrNoSignature):
		return errSigNoV1
	default:
		return errSigMatch
	}
}

// rateLimiter is a token bucket per client key, sharded by key to keep lock
// contention off the ingest path. Its memory is bounded: each shard holds at
// most max/rateShards buckets.
type rateLimiter struct {
	rate     float64 // tokens per second
	burst    float64 // bucket size
	idle     time.Duration
	perShard int
	shards   [rateShards]rateShard
}

type rateShard struct {
	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	lastSweep time.Time
	evicted   uint64 // buckets dropped while still in use (shard full)
}

// bucket is one client's tokens as of last.
type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rps float64, burst, maxClients int) *rateLimiter {
	b := float64(burst)
	if burst < 1 {
		b = max(1, math.Ceil(rps))
	}
	l := &rateLimiter{
		rate:     rps,
		burst:    b,
		perShard: max(maxClients/rateShards, 1),
	}
	// A bucket idle this long has refilled: dropping it changes nothing.
	l.idle = time.Duration(min(b/rps*float64(time.Second), float64(24*time.Hour)))
	for i := range l.shards {
		l.shards[i].buckets = make(map[netip.Addr]*bucket)
	}
	return l
}

func (l *rateLimiter) shard(k netip.Addr) *rateShard {
	b := k.As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return &l.shards[h%rateShards]
}

// take spends one token of k's bucket. It returns 0 when the request may
// go ahead, else how long until a token is there.
func (l *rateLimiter) take(k netip.Addr, now time.Time) time.Duration {
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[k]
	if b == nil {
		if len(s.buckets) >= l.perShard || now.Sub(s.lastSweep) >= rateSweepEvery {
			l.sweepLocked(s, now)
		}
		b = &bucket{tokens: l.burst, last: now}
		s.buckets[k] = b
	} else if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return max(time.Duration((1-b.tokens)/l.rate*float64(time.Second)), time.Nanosecond)
}

// sweepLocked drops the buckets of s idle long enough to have refilled. If
// the shard is still full, it drops an eighth of it at random (those
// clients start again with a full bucket), so that a flood of new
// addresses costs one sweep per many insertions and memory stays bounded.
func (l *rateLimiter) sweepLocked(s *rateShard, now time.Time) {
	s.lastSweep = now
	for k, b := range s.buckets {
		if now.Sub(b.last) >= l.idle {
			delete(s.buckets, k)
		}
	}
	if len(s.buckets) < l.perShard {
		return
	}
	drop := max(l.perShard/8, 1)
	for k := range s.buckets {
		if drop == 0 {
			break
		}
		delete(s.buckets, k)
		s.evicted++
		drop--
	}
}

// evictions counts buckets dropped while possibly still in use because
// their shard was full: each is a client given a fresh burst early.
func (l *rateLimiter) evictions() uint64 {
	var n uint64
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += s.evicted
		s.mu.Unlock()
	}
	return n
}

// clients is how many client buckets are held.
func (l *rateLimiter) clients() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}
