package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/signing"
	"github.com/hookbatch/hookbatch/sink"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

const (
	tokenA        = "tok_alpha_7f3c9e1d2b4a6058"
	tokenB        = "tok_bravo_0e8d7c6b5a493827"
	ingestSecret  = "whsec_aW5nZXN0LXNpZ25pbmcta2V5LTAxMjM0NTY3"
	otherSecret   = "whsec_b3RoZXIta2V5LW5vdC10aGUtb25lLTAxMjM="
	rotatedSecret = "whsec_cHJldmlvdXMta2V5LXN0aWxsLXNpZ25lZA=="
)

// guardedRelay starts a relay whose one subscriber is a sink, with the
// ingest section changed by edit.
func guardedRelay(t *testing.T, edit func(*config.Ingest)) (*Relay, *sink.Sink) {
	t.Helper()
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 100, 20*time.Millisecond))
	edit(&cfg.Ingest)
	return startRelay(t, cfg), s
}

// eventBody is a one-event request body, different for each n.
func eventBody(n int) string {
	return `{"type":"order.created","data":{"n":` + strconv.Itoa(n) + `}}`
}

// wantRefused posts and checks the status and that the JSON error holds
// wantMsg.
func wantRefused(t *testing.T, r *Relay, status int, wantMsg, body string, headers ...string) {
	t.Helper()
	got, resp := post(t, "http://"+r.IngestAddr()+"/v1/events", body, headers...)
	if got != status {
		t.Fatalf("status %d, want %d: %s", got, status, resp)
	}
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(resp), &e); err != nil || e.Error == "" {
		t.Fatalf("answer %q is not a JSON error: %v", resp, err)
	}
	if !strings.Contains(e.Error, wantMsg) {
		t.Fatalf("error %q does not say %q", e.Error, wantMsg)
	}
}

// checkStored checks that the relay stored nothing it refused: no event is
// queued right after the refusals, and once the accepted ones are through,
// the sink has exactly accepted events.
func checkStored(t *testing.T, r *Relay, s *sink.Sink, accepted int) {
	t.Helper()
	waitFor(t, 10*time.Second, "accepted events at the sink", func() bool { return int(s.Stats().Events) >= accepted })
	waitFor(t, 10*time.Second, "an empty queue", func() bool { return r.subscriber("s").q.Depth() == 0 })
	if got := int(s.Stats().Events); got != accepted {
		t.Fatalf("sink has %d events, want %d", got, accepted)
	}
}

func TestAuthBearerToken(t *testing.T) {
	r, s := guardedRelay(t, func(in *config.Ingest) { in.AuthTokens = []string{tokenA, tokenB} })
	n := 0
	refused := func(msg string, headers ...string) {
		t.Helper()
		n++
		wantRefused(t, r, fasthttp.StatusUnauthorized, msg, eventBody(n), headers...)
		if d := r.subscriber("s").q.Depth(); d != 0 {
			t.Fatalf("a refused request left %d events queued", d)
		}
	}
	refused("missing or invalid bearer token")
	refused("missing or invalid bearer token", "Authorization", "Bearer wrong-token-000000000")
	refused("missing or invalid bearer token", "Authorization", "Bearer ")
	refused("missing or invalid bearer token", "Authorization", tokenA)
	refused("missing or invalid bearer token", "Authorization", "Basic "+tokenA)
	refused("missing or invalid bearer token", "Authorization", "Bearer "+tokenA+"x")
	refused("missing or invalid bearer token", "Authorization", "Bearer "+tokenA[:len(tokenA)-1])
	refused("missing or invalid bearer token", "Authorization", "Bearer "+tokenA+" "+tokenB)
	refused("missing or invalid bearer token", "Authorization", "Bearer "+strings.ToUpper(tokenA))
	checkStored(t, r, s, 0)

	accepted := 0
	for _, auth := range []string{"Bearer " + tokenA, "Bearer " + tokenB, "bearer " + tokenA, "BEARER " + tokenB} {
		n++
		mustIngest(t, r, "/v1/events", eventBody(n), "Authorization", auth)
		accepted++
	}
	checkStored(t, r, s, accepted)
}

// stdHeaders returns the Standard Webhooks headers signing body with secret
// at time ts.
func stdHeaders(t *testing.T, secret, id string, ts int64, body string) []string {
	t.Helper()
	sg, err := signing.NewSigner(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := sg.AppendStandard(nil, []byte(id), ts, []byte(body))
	return []string{"webhook-id", id, "webhook-timestamp", strconv.FormatInt(ts, 10), "webhook-signature", string(sig)}
}

// hexHeader returns X-Webhook-Signature for body with secret.
func hexHeader(t *testing.T, secret, body string) []string {
	t.Helper()
	sg, err := signing.NewSigner(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"X-Webhook-Signature", string(sg.AppendHex(nil, []byte(body)))}
}

func TestAuthSignature(t *testing.T) {
	r, s := guardedRelay(t, func(in *config.Ingest) { in.SigningSecret = ingestSecret })
	n := 0
	next := func() string { n++; return eventBody(n) }
	refused := func(msg, body string, headers ...string) {
		t.Helper()
		wantRefused(t, r, fasthttp.StatusUnauthorized, msg, body, headers...)
		if d := r.subscriber("s").q.Depth(); d != 0 {
			t.Fatalf("a refused request left %d events queued", d)
		}
	}
	now := time.Now().Unix()

	// Missing.
	refused("missing signature", next())
	refused("incomplete Standard Webhooks signature", next(), "webhook-id", "msg_1", "webhook-timestamp", strconv.FormatInt(now, 10))
	// Wrong key.
	b := next()
	refused("signature does not match", b, hexHeader(t, otherSecret, b)...)
	b = next()
	refused("signature does not match", b, stdHeaders(t, otherSecret, "msg_1", now, b)...)
	// Not a signature at all.
	refused("signature does not match", next(), "X-Webhook-Signature", "sha256=00")
	refused("webhook-signature holds no v1 signature", next(), "webhook-id", "msg_1", "webhook-timestamp", strconv.FormatInt(now, 10), "webhook-signature", "v2,abc")
	// Body tampered after signing.
	b = next()
	tampered := strings.Replace(b, `"n":`, `"n": `, 1)
	refused("signature does not match", tampered, hexHeader(t, ingestSecret, b)...)
	refused("signature does not match", tampered, stdHeaders(t, ingestSecret, "msg_1", now, b)...)
	// Signed id differs from the one sent.
	b = next()
	h := stdHeaders(t, ingestSecret, "msg_1", now, b)
	h[1] = "msg_2"
	refused("signature does not match", b, h...)
	// Stale and future timestamps, correctly signed.
	b = next()
	refused("signature timestamp outside the 5 minute tolerance", b, stdHeaders(t, ingestSecret, "msg_1", now-600, b)...)
	refused("signature timestamp outside the 5 minute tolerance", b, stdHeaders(t, ingestSecret, "msg_1", now+600, b)...)
	h = stdHeaders(t, ingestSecret, "msg_1", now, b)
	h[3] = "yesterday"
	refused("webhook-timestamp is not unix seconds", b, h...)
	// Both schemes sent: each must verify.
	b = next()
	refused("signature timestamp outside the 5 minute tolerance", b, append(hexHeader(t, ingestSecret, b), stdHeaders(t, ingestSecret, "msg_1", now-600, b)...)...)
	refused("signature does not match", b, append(hexHeader(t, otherSecret, b), stdHeaders(t, ingestSecret, "msg_1", now, b)...)...)
	checkStored(t, r, s, 0)

	accepted := 0
	b = next()
	mustIngest(t, r, "/v1/events", b, hexHeader(t, ingestSecret, b)...)
	accepted++
	b = next()
	upper := hexHeader(t, ingestSecret, b)
	upper[1] = "sha256=" + strings.ToUpper(upper[1][len("sha256="):])
	mustIngest(t, r, "/v1/events", b, upper...)
	accepted++
	b = next()
	mustIngest(t, r, "/v1/events", b, stdHeaders(t, ingestSecret, "msg_ok_1", time.Now().Unix(), b)...)
	accepted++
	b = next() // inside the tolerance, either way
	mustIngest(t, r, "/v1/events", b, stdHeaders(t, ingestSecret, "msg_ok_2", time.Now().Unix()-240, b)...)
	accepted++
	b = next()
	mustIngest(t, r, "/v1/events", b, stdHeaders(t, ingestSecret, "msg_ok_3", time.Now().Unix()+240, b)...)
	accepted++
	b = next()
	mustIngest(t, r, "/v1/events", b, append(hexHeader(t, ingestSecret, b), stdHeaders(t, ingestSecret, "msg_ok_4", time.Now().Unix(), b)...)...)
	accepted++
	checkStored(t, r, s, accepted)
}

func TestAuthTokenAndSignatureBothRequired(t *testing.T) {
	r, s := guardedRelay(t, func(in *config.Ingest) {
		in.AuthTokens = []string{tokenA}
		in.SigningSecret = ingestSecret
	})
	b := eventBody(1)
	sig := hexHeader(t, ingestSecret, b)
	wantRefused(t, r, fasthttp.StatusUnauthorized, "missing or invalid bearer token", b, sig...)
	wantRefused(t, r, fasthttp.StatusUnauthorized, "missing signature", b, "Authorization", "Bearer "+tokenA)
	wantRefused(t, r, fasthttp.StatusUnauthorized, "missing or invalid bearer token", b, append([]string{"Authorization", "Bearer " + tokenB}, sig...)...)
	checkStored(t, r, s, 0)
	mustIngest(t, r, "/v1/events", b, append([]string{"Authorization", "Bearer " + tokenA}, sig...)...)
	checkStored(t, r, s, 1)
}

func TestGuardAllowCIDRs(t *testing.T) {
	r, s := guardedRelay(t, func(in *config.Ingest) { in.AllowCIDRs = []string{"10.0.0.0/8", "192.168.1.7"} })
	wantRefused(t, r, fasthttp.StatusForbidden, "not in ingest.allow_cidrs", eventBody(1))
	checkStored(t, r, s, 0)
	// Refused when it connects: a client outside the list cannot make the
	// relay wait for (or read) a body it announces and never sends.
	c, err := net.Dial("tcp", r.IngestAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /v1/events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != fasthttp.StatusForbidden || !strings.Contains(string(got), `"error":"client address is not in ingest.allow_cidrs"`) {
		t.Fatalf("answer %d %s, want a JSON 403", resp.StatusCode, got)
	}
	if v := metricValue(t, r, `hookbatch_ingest_requests_total{code="403"}`); v != 2 {
		t.Errorf("403 counter %v, want 2", v)
	}

	r, s = guardedRelay(t, func(in *config.Ingest) { in.AllowCIDRs = []string{"10.0.0.0/8", "127.0.0.0/8"} })
	mustIngest(t, r, "/v1/events", eventBody(1))
	checkStored(t, r, s, 1)

	r, s = guardedRelay(t, func(in *config.Ingest) { in.AllowCIDRs = []string{"127.0.0.1"} })
	mustIngest(t, r, "/v1/events", eventBody(1))
	checkStored(t, r, s, 1)
}

// TestGuardAdmitAddresses checks allow_cidrs matching on addresses a
// loopback test cannot come from: IPv6, IPv4-mapped IPv6 and single
// addresses.
func TestGuardAdmitAddresses(t *testing.T) {
	g, err := newGuard(config.Ingest{AllowCIDRs: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:198.51.100.0/120"}})
	if err != nil {
		t.Fatal(err)
	}
	f := func(addr string, want int) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)), nil)
		got := 0
		if e := g.admit(&ctx); e != nil {
			got = e.status
		}
		if got != want {
			t.Fatalf("admit(%s) = %d, want %d", addr, got, want)
		}
	}
	f("10.1.2.3:1000", 0)
	f("[::ffff:10.1.2.3]:1000", 0)
	f("11.0.0.1:1000", 403)
	f("[2001:db8::1]:1000", 0)
	f("[2001:db9::1]:1000", 403)
	f("192.0.2.7:1000", 0)
	f("192.0.2.8:1000", 403)
	f("198.51.100.200:1000", 0)
	f("[::ffff:198.51.100.200]:1000", 0)
	f("198.51.101.1:1000", 403)
	f("127.0.0.1:1000", 403)
	f("[::1]:1000", 403)
	f("[2001:db8::1%eth0]:1000", 0)
}

func TestGuardConfigErrors(t *testing.T) {
	f := func(in config.Ingest, want string) {
		t.Helper()
		_, err := newGuard(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("newGuard: %v, want an error saying %q", err, want)
		}
		for _, secret := range append(append([]string{in.SigningSecret}, in.AuthTokens...), in.AllowCIDRs...) {
			if len(secret) > 8 && strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) {
				t.Fatalf("error %q quotes the config", err)
			}
		}
	}
	f(config.Ingest{AllowCIDRs: []string{"10.0.0.0/8", "10.0.0.0/33"}}, "ingest.allow_cidrs[1]")
	f(config.Ingest{AllowCIDRs: []string{"not-an-address"}}, "ingest.allow_cidrs[0]")
	f(config.Ingest{AllowCIDRs: []string{"::ffff:0.0.0.0/64"}}, "ingest.allow_cidrs[0]")
	f(config.Ingest{AuthTokens: []string{tokenA, ""}}, "ingest.auth_tokens[1]")
	f(config.Ingest{SigningSecret: "whsec_!!!notbase64secretmaterial"}, "ingest.signing_secret")
	f(config.Ingest{RateLimit: config.RateLimit{PerClientRPS: -1, Burst: 1}}, "ingest.rate_limit.per_client_rps")
}

// localClient is a client whose connections come from the loopback address
// local (any of 127.0.0.0/8 works on Linux).
func localClient(t *testing.T, local string) *fasthttp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return &fasthttp.Client{
		Dial:         func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) },
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	}
}

// postFrom posts body with c and returns the status and Retry-After.
func postFrom(t *testing.T, c *fasthttp.Client, url, body string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI(url)
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	if err := c.Do(req, resp); err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	if resp.StatusCode() == fasthttp.StatusTooManyRequests {
		var e struct{ Error string }
		if err := json.Unmarshal(resp.Body(), &e); err != nil || e.Error == "" {
			t.Fatalf("429 answer %q is not a JSON error", resp.Body())
		}
	}
	return resp.StatusCode(), string(resp.Header.Peek("Retry-After"))
}

func TestRateLimitPerClientAddress(t *testing.T) {
	const burst = 5
	r, s := guardedRelay(t, func(in *config.Ingest) {
		in.RateLimit = config.RateLimit{PerClientRPS: 0.5, Burst: burst}
	})
	url := "http://" + r.IngestAddr() + "/v1/events"
	flood, other := localClient(t, "127.0.0.1"), localClient(t, "127.0.0.2")

	accepted, limited := 0, 0
	for i := range 3 * burst {
		status, retry := postFrom(t, flood, url, eventBody(i))
		switch status {
		case fasthttp.StatusAccepted:
			accepted++
		case fasthttp.StatusTooManyRequests:
			limited++
			if n, err := strconv.Atoi(retry); err != nil || n < 1 {
				t.Fatalf("429 with Retry-After %q, want whole seconds, at least 1", retry)
			}
		default:
			t.Fatalf("flood request %d: status %d", i, status)
		}
	}
	// At 0.5/s, the test may take a second or two: a token may come back.
	if accepted < burst || accepted > burst+2 || limited < 2*burst-2 {
		t.Fatalf("flood of %d: %d accepted, %d limited; want about %d accepted", 3*burst, accepted, limited, burst)
	}
	// Another address has its own bucket.
	for i := range burst {
		if status, _ := postFrom(t, other, url, eventBody(100+i)); status != fasthttp.StatusAccepted {
			t.Fatalf("request %d from 127.0.0.2: status %d while 127.0.0.1 is limited", i, status)
		}
	}
	if status, _ := postFrom(t, flood, url, eventBody(200)); status != fasthttp.StatusTooManyRequests {
		accepted++ // a token came back meanwhile
	}
	checkStored(t, r, s, accepted+burst)
}

func TestRateLimiterBucket(t *testing.T) {
	l := newRateLimiter(2, 3, 1024)
	k := netip.MustParseAddr("192.0.2.1")
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		if w := l.take(k, t0); w != 0 {
			t.Fatalf("take %d within the burst: wait %v", i, w)
		}
	}
	if w := l.take(k, t0); w != 500*time.Millisecond {
		t.Fatalf("take past the burst: wait %v, want 500ms", w)
	}
	if w := l.take(k, t0.Add(250*time.Millisecond)); w != 250*time.Millisecond {
		t.Fatalf("take after 250ms: wait %v, want 250ms", w)
	}
	if w := l.take(k, t0.Add(500*time.Millisecond)); w != 0 {
		t.Fatalf("take after 500ms: wait %v, want 0", w)
	}
	// A long pause refills to the burst, no more.
	t1 := t0.Add(time.Hour)
	for i := range 3 {
		if w := l.take(k, t1); w != 0 {
			t.Fatalf("take %d after an hour: wait %v", i, w)
		}
	}
	if w := l.take(k, t1); w == 0 {
		t.Fatal("bucket refilled past its burst")
	}
	if got := retryAfterSeconds(10 * time.Millisecond); got != 1 {
		t.Fatalf("retryAfterSeconds(10ms) = %d, want 1", got)
	}
	if got := retryAfterSeconds(2100 * time.Millisecond); got != 3 {
		t.Fatalf("retryAfterSeconds(2.1s) = %d, want 3", got)
	}
	// IPv6 clients are limited per /64.
	if rateKey(netip.MustParseAddr("2001:db8:1:2::1")) != rateKey(netip.MustParseAddr("2001:db8:1:2:ffff::9")) {
		t.Fatal("two addresses of one /64 have separate buckets")
	}
}

// TestRateLimiterBounded floods the limiter with distinct addresses and
// checks it never tracks more than its bound, and that idle clients are
// dropped while a limited one keeps its state.
func TestRateLimiterBounded(t *testing.T) {
	const maxClients = 256
	l := newRateLimiter(1, 2, maxClients)
	now := time.Unix(1_700_000_000, 0)
	busy := netip.MustParseAddr("198.51.100.1")
	l.take(busy, now)
	l.take(busy, now)
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.take(a, now)
		if i%1000 == 0 {
			if n := l.clients(); n > maxClients {
				t.Fatalf("after %d clients: %d tracked, bound %d", i, n, maxClients)
			}
		}
	}
	if n := l.clients(); n > maxClients {
		t.Fatalf("%d tracked, bound %d", n, maxClients)
	}
	if l.evictions() == 0 {
		t.Fatal("a flood past the bound evicted nothing")
	}
	// Once every bucket has refilled, a sweep drops them all.
	later := now.Add(rateSweepEvery + time.Second)
	l.take(netip.MustParseAddr("203.0.113.1"), later)
	shard := l.shard(netip.MustParseAddr("203.0.113.1"))
	shard.mu.Lock()
	n := len(shard.buckets)
	shard.mu.Unlock()
	if n != 1 {
		t.Fatalf("after a sweep the shard holds %d buckets, want 1", n)
	}

	// A limited client keeps its (empty) bucket through sweeps that drop
	// the idle ones around it.
	l = newRateLimiter(1, 2, maxClients)
	for i := range 2 * maxClients {
		l.take(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), now)
	}
	t1 := now.Add(3 * time.Second) // every bucket of now has refilled
	l.take(busy, t1)
	l.take(busy, t1)
	for i := range 2 * rateShards {
		l.take(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), t1) // sweeps full shards
	}
	if w := l.take(busy, t1); w == 0 {
		t.Fatal("a limited client got its burst back")
	}
	if n := l.clients(); n > 1+2*rateShards+maxClients/rateShards {
		t.Fatalf("%d clients tracked after sweeps, want the idle ones gone", n)
	}
}

// TestSlowLorisCutOff trickles a request's headers one byte every 100ms and
// checks the server closes that connection once the read timeout passes,
// while another client is served throughout.
func TestSlowLorisCutOff(t *testing.T) {
	old := ingestReadTimeout
	ingestReadTimeout = 300 * time.Millisecond
	t.Cleanup(func() { ingestReadTimeout = old })
	r, s := guardedRelay(t, func(*config.Ingest) {})

	conn, err := net.Dial("tcp", r.IngestAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := make(chan []byte)
	go func() {
		got, _ := io.ReadAll(conn) // until the server closes
		closed <- got
	}()
	stop := make(chan struct{})
	trickled := make(chan int)
	go func() {
		req := "POST /v1/events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Padding: " + strings.Repeat("a", 200)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		n := 0
		defer func() { trickled <- n }()
		for ; n < len(req); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte{req[n]}); err != nil {
				return
			}
		}
	}()

	start := time.Now()
	served := 0
	var answer []byte
loop:
	for {
		select {
		case answer = <-closed:
			break loop
		default:
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("slow connection still open after 5s with a 300ms read timeout")
		}
		mustIngest(t, r, "/v1/events", eventBody(served))
		served++
	}
	elapsed := time.Since(start)
	close(stop)
	n := <-trickled
	t.Logf("cut off after %v and %d bytes; %d requests served meanwhile; answer %q", elapsed, n, served, answer)
	if served == 0 {
		t.Fatal("no request served while the slow client trickled")
	}
	if len(answer) > 0 && !bytes.HasPrefix(answer, []byte("HTTP/1.1 408")) {
		t.Fatalf("slow client answered %q, want 408 or nothing", answer)
	}
	checkStored(t, r, s, served)
}

func TestGuardOversizedRequests(t *testing.T) {
	r, s := guardedRelay(t, func(in *config.Ingest) { in.MaxBodyBytes = 4096 })
	url := "http://" + r.IngestAddr() + "/v1/events"
	// The server answers as soon as its header buffer is full and closes
	// the connection, so the request is written whole first, with one write
	// on a raw connection, and the answer read after.
	rawStatus := func(req string) string {
		t.Helper()
		c, err := net.Dial("tcp", r.IngestAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		line, _, _ := strings.Cut(string(got), "\r\n")
		if line == "" {
			t.Fatalf("no answer: %v", err)
		}
		return line
	}
	b := eventBody(1)
	big := "POST /v1/events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Padding: " + strings.Repeat("p", 20<<10) +
		"\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b
	if got := rawStatus(big); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Fatalf("20 KiB header: %q, want 431", got)
	}
	var many strings.Builder
	many.WriteString("POST /v1/events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n")
	for i := range 400 {
		fmt.Fprintf(&many, "X-H%d: %s\r\n", i, strings.Repeat("v", 50))
	}
	many.WriteString("Content-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b)
	if got := rawStatus(many.String()); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Fatalf("400 headers: %q, want 431", got)
	}
	large := `{"type":"t","data":"` + strings.Repeat("x", 5000) + `"}`
	if status, resp := post(t, url, large); status != fasthttp.StatusRequestEntityTooLarge {
		t.Fatalf("5 KB body: status %d, want 413: %s", status, resp)
	}
	// Headers under the limit are fine.
	mustIngest(t, r, "/v1/events", eventBody(3), "X-Padding", strings.Repeat("p", 8<<10))
	checkStored(t, r, s, 1)
}

// TestClientErrorsLoggedAtDebug: fasthttp's line for a connection's error
// (here a body over the limit, answered 413) is logged at debug level, not
// as a warning a client could repeat at will.
func TestClientErrorsLoggedAtDebug(t *testing.T) {
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 100, 20*time.Millisecond))
	cfg.Ingest.MaxBodyBytes = 4096
	var logs syncBuffer
	r := openRelay(t, cfg, zerolog.New(&logs).Level(zerolog.DebugLevel))
	defer stopRelay(t, r)
	large := `{"type":"t","data":"` + strings.Repeat("x", 5000) + `"}`
	if status, resp := post(t, "http://"+r.IngestAddr()+"/v1/events", large); status != fasthttp.StatusRequestEntityTooLarge {
		t.Fatalf("5 KB body: status %d, want 413: %s", status, resp)
	}
	waitFor(t, 5*time.Second, "fasthttp's line", func() bool { return strings.Contains(logs.String(), "body size exceeds") })
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `"component":"fasthttp"`) && !strings.Contains(line, `"level":"debug"`) {
			t.Errorf("logged above debug: %s", line)
		}
	}
}

// TestUnknownSubscriberAfterAuth: with tokens configured, the targeted
// path tells an unknown subscriber id (404) only to an authenticated
// producer; others get 401, as for a known one.
func TestUnknownSubscriberAfterAuth(t *testing.T) {
	r, _ := guardedRelay(t, func(in *config.Ingest) { in.AuthTokens = []string{tokenA} })
	f := func(id string, want int, headers ...string) {
		t.Helper()
		if got, body := post(t, "http://"+r.IngestAddr()+"/v1/subscribers/"+id+"/events", eventBody(1), headers...); got != want {
			t.Fatalf("%s: status %d, want %d: %s", id, got, want, body)
		}
	}
	f("nope", fasthttp.StatusUnauthorized)
	f("s", fasthttp.StatusUnauthorized)
	f("nope", fasthttp.StatusNotFound, "Authorization", "Bearer "+tokenA)
	f("s", fasthttp.StatusAccepted, "Authorization", "Bearer "+tokenA)
}

// TestTokensNotInClientErrorLog: a request whose headers fasthttp cannot
// parse (a bad Content-Length) makes it log an error, which must not
// quote the request's headers: the producer's token on the ingest
// listener, the admin token on the admin one.
func TestTokensNotInClientErrorLog(t *testing.T) {
	const adminToken = "adm_3e9c1f7a5b2d4c6e8f0a"
	cfg := testConfig(t, sub("s", downURL(t), 100, time.Hour))
	cfg.Ingest.AuthTokens = []string{tokenA}
	cfg.Admin.Token = adminToken
	var logs syncBuffer
	r := openRelay(t, cfg, zerolog.New(&logs).Level(zerolog.DebugLevel))
	defer stopRelay(t, r)
	for _, c := range []struct{ addr, path, token string }{
		{r.IngestAddr(), "/v1/events", tokenA},
		{r.AdminAddr(), "/v1/subscribers", adminToken},
	} {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		req := "POST " + c.path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + c.token +
			"\r\nContent-Type: application/json\r\nContent-Length: 12x\r\n\r\n{}"
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_, _ = bufio.NewReader(conn).ReadString('\n') // its answer: the error is logged by then or soon
		_ = conn.Close()
	}
	waitFor(t, 5*time.Second, "fasthttp's two lines", func() bool {
		return strings.Count(logs.String(), `"component":"fasthttp"`) >= 2
	})
	for _, secret := range []string{tokenA, adminToken} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log holds a token:\n%s", logs.String())
		}
	}
}

// TestKeyRotation delivers with secret A while B is a previous secret, and
// checks a receiver that knows only A and one that knows only B both accept.
func TestKeyRotation(t *testing.T) {
	const secretA, secretB = testSecret, rotatedSecret
	onlyA := startSink(t, sink.Options{Secrets: []string{secretA}})
	// A receiver still on B verifies the Standard Webhooks signature, which
	// carries one v1 entry per key. X-Webhook-Signature holds the current
	// key's MAC only, so it cannot verify with B.
	vB, err := signing.NewVerifier(secretB)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bStatus []int
	onlyB := startSink(t, sink.Options{Secrets: []string{}}) // no check of its own
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		err := vB.VerifyStandard(h.Peek("webhook-id"), h.Peek("webhook-timestamp"), h.Peek("webhook-signature"), ctx.PostBody(), time.Now(), 5*time.Minute)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bStatus = append(bStatus, 401)
			ctx.SetStatusCode(401)
			return
		}
		bStatus = append(bStatus, 200)
		onlyB.Handler()(ctx)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	sa := sub("a", onlyA.URL(), 10, 20*time.Millisecond)
	sa.Secret, sa.PreviousSecrets = secretA, []string{secretB}
	sb := sub("b", "http://"+ln.Addr().String()+"/hooks", 10, 20*time.Millisecond)
	sb.Secret, sb.PreviousSecrets = secretA, []string{secretB}
	r := startRelay(t, testConfig(t, sa, sb))
	mustIngest(t, r, "/v1/events", `[`+eventBody(1)+`,`+eventBody(2)+`]`)
	waitFor(t, 10*time.Second, "both receivers", func() bool {
		return onlyA.Stats().Events == 2 && onlyB.Stats().Events == 2
	})
	if st := onlyA.Stats(); st.Rejected != 0 {
		t.Fatalf("receiver with A rejected %d deliveries", st.Rejected)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range bStatus {
		if s != 200 {
			t.Fatalf("receiver with B answered %v", bStatus)
		}
	}
}

// TestKeyRotationSinkWithPreviousSecret is the same check with the sink
// package verifying only with the previous secret B. X-Webhook-Signature
// carries the current key's MAC only (DESIGN §6 has a single hex value), so
// during a rotation the sink relies on the Standard Webhooks signature.
func TestKeyRotationSinkWithPreviousSecret(t *testing.T) {
	onlyB := startSink(t, sink.Options{Secrets: []string{rotatedSecret}})
	sb := sub("b", onlyB.URL(), 10, 20*time.Millisecond)
	sb.PreviousSecrets = []string{rotatedSecret}
	cfg := testConfig(t, sb)
	cfg.Delivery.Retry.MaxAttempts = 1
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", eventBody(1))
	waitFor(t, 10*time.Second, "an answer from the sink", func() bool {
		st := onlyB.Stats()
		return st.Events+st.Rejected > 0
	})
	if st := onlyB.Stats(); st.Events != 1 || st.Rejected != 0 {
		t.Fatalf("sink with only the previous secret: %+v", st)
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSecretsNotLogged runs a relay logging at debug level through auth
// failures, deliveries, failed deliveries and dead letters, and checks no
// configured secret or token, nor a presented one, shows in the log.
func TestSecretsNotLogged(t *testing.T) {
	const adminToken = "adm_token_5a4b3c2d1e0f9e8d"
	const presented = "Bearer tok_presented_bad_9f8e7d6c"
	good := startSink(t, sink.Options{})
	good.SetFailRate(1) // fail first: failures are logged
	wrongKey := startSink(t, sink.Options{Secrets: []string{otherSecret}})
	sg := sub("good", good.URL(), 10, 20*time.Millisecond)
	sg.PreviousSecrets = []string{rotatedSecret}
	sg.Headers = map[string]string{"X-Api-Key": "hdr_key_value_0a1b2c3d"}
	sw := sub("wrong", wrongKey.URL(), 10, 20*time.Millisecond)
	cfg := testConfig(t, sg, sw)
	cfg.Ingest.AuthTokens = []string{tokenA, tokenB}
	cfg.Ingest.SigningSecret = ingestSecret
	cfg.Admin.Token = adminToken
	cfg.LogLevel = "debug"

	var logBuf syncBuffer
	r, err := New(cfg, zerolog.New(&logBuf).Level(zerolog.DebugLevel), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	closed := false
	closeRelay := func() {
		if closed {
			return
		}
		closed = true
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(closeRelay)

	url := "http://" + r.IngestAddr() + "/v1/events"
	b := eventBody(1)
	post(t, url, b)
	post(t, url, b, "Authorization", presented)
	post(t, url, b, "Authorization", "Bearer "+tokenA)
	post(t, url, b, append([]string{"Authorization", "Bearer " + tokenA}, hexHeader(t, otherSecret, b)...)...)
	post(t, url, b, append([]string{"Authorization", "Bearer " + tokenA}, stdHeaders(t, ingestSecret, "m", time.Now().Unix()-900, b)...)...)
	mustIngest(t, r, "/v1/events", b, append([]string{"Authorization", "Bearer " + tokenB}, hexHeader(t, ingestSecret, b)...)...)
	do(t, "GET", "http://"+r.AdminAddr()+"/v1/subscribers", "", "Authorization", "Bearer adm_wrong_token_123456")
	do(t, "GET", "http://"+r.AdminAddr()+"/v1/subscribers", "", "Authorization", "Bearer "+adminToken)

	waitFor(t, 10*time.Second, "failed deliveries to good", func() bool { return good.Stats().Failed >= 2 })
	good.SetFailRate(0)
	waitFor(t, 10*time.Second, "delivery to good", func() bool { return good.Stats().Events == 1 })
	waitFor(t, 10*time.Second, "wrong-key batch dead-lettered", func() bool { return r.subscriber("wrong").dead.Load() == 1 })
	closeRelay()

	log := logBuf.String()
	if !strings.Contains(log, "batch dead-lettered") {
		t.Fatalf("log misses the dead letter; the test did not exercise what it means to:\n%s", log)
	}
	for _, secret := range []string{
		tokenA, tokenB, ingestSecret, testSecret, rotatedSecret, adminToken, presented,
		"tok_presented_bad_9f8e7d6c", "adm_wrong_token_123456", "hdr_key_value_0a1b2c3d",
	} {
		if strings.Contains(log, secret) {
			t.Errorf("log contains the secret %q", secret)
		}
		if tail, ok := strings.CutPrefix(secret, "whsec_"); ok && strings.Contains(log, tail) {
			t.Errorf("log contains the key of %q", secret)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}

// TestGuardAllocations locks in that the checks of an accepted request cost
// no allocation once a client is known (signatures are covered by the
// signing package's own test).
func TestGuardAllocations(t *testing.T) {
	g, err := newGuard(config.Ingest{
		AuthTokens: []string{tokenA, tokenB},
		AllowCIDRs: []string{"10.0.0.0/8", "127.0.0.0/8"},
		RateLimit:  config.RateLimit{PerClientRPS: 1e9, Burst: 1 << 30},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}, nil)
	ctx.Request.Header.Set("Authorization", "Bearer "+tokenB)
	body := []byte(eventBody(1))
	if n := testing.AllocsPerRun(100, func() {
		if e := g.admit(&ctx); e != nil {
			t.Fatal(e.msg)
		}
		if e := g.authenticate(&ctx, body); e != nil {
			t.Fatal(e.msg)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per accepted request, want 0", n)
	}
}

// TestConnectionsPerAddress: a client address holding the most connections
// allowed gets a JSON 429 with Retry-After for one more, counted like every
// answer, and gets its place back when one of its connections closes; over
// TLS too.
func TestConnectionsPerAddress(t *testing.T) {
	old := ingestMaxConnsPerIP
	ingestMaxConnsPerIP = 2
	t.Cleanup(func() { ingestMaxConnsPerIP = old })
	t.Run("plain", func(t *testing.T) {
		r, s := guardedRelay(t, func(*config.Ingest) {})
		testConnectionsPerAddress(t, r, s, func() (net.Conn, error) { return net.Dial("tcp", r.IngestAddr()) })
	})
	t.Run("tls", func(t *testing.T) {
		certFile, keyFile, cert := selfSigned(t, t.TempDir())
		s := startSink(t, sink.Options{})
		cfg := testConfig(t, sub("s", s.URL(), 100, 20*time.Millisecond))
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		r := startRelay(t, cfg)
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		testConnectionsPerAddress(t, r, s, func() (net.Conn, error) {
			return tls.Dial("tcp", r.IngestAddr(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		})
	})
}

func testConnectionsPerAddress(t *testing.T, r *Relay, s *sink.Sink, dialRelay func() (net.Conn, error)) {
	ln := r.ingestLn.(*perIPListener)
	loopback := netip.MustParseAddr("127.0.0.1")

	// One request on a connection of its own, read to its answer.
	roundTrip := func(c net.Conn, i int) string {
		t.Helper()
		body := eventBody(i)
		req := "POST /v1/events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatalf("write: %v", err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("Retry-After"), bytes.TrimSpace(got))
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := dialRelay()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	held := []net.Conn{dial(), dial()}
	for i, c := range held {
		if got := roundTrip(c, i); !strings.HasPrefix(got, "202 ") {
			t.Fatalf("connection %d within the bound: %s", i, got)
		}
	}
	got := roundTrip(dial(), 2)
	want := `429 1 {"error":"too many connections from this address (at most 2)"}`
	if got != want {
		t.Fatalf("third connection: %q, want %q", got, want)
	}
	if v := metricValue(t, r, `hookbatch_ingest_requests_total{code="429"}`); v != 1 {
		t.Errorf("429 counter %v, want 1", v)
	}

	held[0].Close()
	waitFor(t, 5*time.Second, "the closed connection's place back", func() bool {
		ln.mu.Lock()
		defer ln.mu.Unlock()
		return ln.counts[loopback] == 1
	})
	if got := roundTrip(dial(), 3); !strings.HasPrefix(got, "202 ") {
		t.Fatalf("after a connection closed: %s", got)
	}
	checkStored(t, r, s, 3)
}
