package relay

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// perIPListener refuses connections from addresses outside
// ingest.allow_cidrs before reading anything from them, and bounds the
// connections one client address holds open. A refused connection is
// answered 403 or 429 with a JSON error body, like every other refusal,
// then closed (fasthttp's own MaxConnsPerIP answers in plain text, before
// any handler or metric sees it).
type perIPListener struct {
	net.Listener
	max     int
	allowed func(netip.Addr) bool // nil: every address
	refused func(status int)      // counts a refusal

	mu     sync.Mutex
	counts map[netip.Addr]int

	// answering bounds the refused connections being answered at once;
	// beyond it they are closed without an answer.
	answering chan struct{}
}

// maxAnswering is how many refused connections are answered at once.
const maxAnswering = 64

func newPerIPListener(ln net.Listener, max int, allowed func(netip.Addr) bool, refused func(status int)) *perIPListener {
	return &perIPListener{Listener: ln, max: max, allowed: allowed, refused: refused,
		counts: make(map[netip.Addr]int), answering: make(chan struct{}, maxAnswering)}
}

// Accept returns the next connection within the bound; refused ones are
// answered in the background.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerAddr(c.RemoteAddr())
		if l.allowed != nil && !l.allowed(ip) {
			l.refuse(c, fasthttp.StatusForbidden, errNotAllow.msg)
			continue
		}
		l.mu.Lock()
		if l.counts[ip] >= l.max {
			l.mu.Unlock()
			l.refuse(c, fasthttp.StatusTooManyRequests, "too many connections from this address (at most "+strconv.Itoa(l.max)+")")
			continue
		}
		l.counts[ip]++
		l.mu.Unlock()
		lc := &limitedConn{Conn: c, l: l, ip: ip}
		if tc, ok := c.(*tls.Conn); ok {
			return &limitedTLSConn{limitedConn: lc, tc: tc}, nil
		}
		return lc, nil
	}
}

// refuse counts a refused connection and answers it in the background, or
// closes it at once while maxAnswering others are being answered (a flood
// of refused connections then costs no more than that).
func (l *perIPListener) refuse(c net.Conn, status int, msg string) {
	l.refused(status)
	select {
	case l.answering <- struct{}{}:
		go func() {
			defer func() { <-l.answering }()
			refuseConn(c, status, msg)
		}()
	default:
		_ = c.Close()
	}
}

func (l *perIPListener) release(ip netip.Addr) {
	l.mu.Lock()
	if l.counts[ip]--; l.counts[ip] <= 0 {
		delete(l.counts, ip)
	}
	l.mu.Unlock()
}

// refuseConn answers a refused connection with status and a JSON error and
// closes it. It reads what the client sent for a moment first, so that
// closing does not reset the connection before the client has read the
// answer.
func refuseConn(c net.Conn, status int, msg string) {
	defer c.Close()
	body := string(appendErrorBody(nil, msg))
	resp := "HTTP/1.1 " + strconv.Itoa(status) + " " + fasthttp.StatusMessage(status) + "\r\n" +
		"Content-Type: application/json\r\n"
	if status == fasthttp.StatusTooManyRequests {
		resp += "Retry-After: 1\r\n"
	}
	resp += "Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, resp); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	l    *perIPListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

// limitedTLSConn keeps a TLS connection's state visible to fasthttp
// (RequestCtx.IsTLS and TLSConnectionState).
type limitedTLSConn struct {
	*limitedConn
	tc *tls.Conn
}

func (c *limitedTLSConn) Handshake() error                     { return c.tc.Handshake() }
func (c *limitedTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }
