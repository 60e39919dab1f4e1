package relay

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/config"
	"github.com/hookbatch/hookbatch/sink"
)

func TestSSRFIsPrivate(t *testing.T) {
	f := func(addr string, want bool) {
		t.Helper()
		if got := isPrivate(netip.MustParseAddr(addr)); got != want {
			t.Fatalf("isPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
	// IPv4 private, loopback, link-local, CGNAT, unspecified, reserved.
	for _, a := range []string{
		"127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
		"192.168.0.1", "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
		"192.0.0.8", "198.18.0.1", "198.19.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
		"255.255.255.255",
	} {
		f(a, true)
	}
	// IPv6 loopback, unspecified, ULA, link-local, multicast, NAT64,
	// documentation.
	for _, a := range []string{
		"::1", "::", "fc00::1", "fd12:3456:789a::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fe80::1", "febf::1", "ff02::1", "ff05::2", "64:ff9b::a00:1", "2001:db8::1",
		"fec0::1",             // site-local (deprecated, still routable inside sites)
		"2002:a00:1::1",       // 6to4 of 10.0.0.1
		"2001:0:4136:e378::1", // Teredo
	} {
		f(a, true)
	}
	// IPv4-mapped IPv6 is judged by its IPv4 address.
	for _, a := range []string{"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::ffff:0.0.0.0"} {
		f(a, true)
	}
	// Public addresses, and the neighbours of private ranges.
	for _, a := range []string{
		"8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.1", "100.63.255.255",
		"100.128.0.1", "169.253.255.255", "11.0.0.1", "9.255.255.255", "192.169.0.1", "::ffff:8.8.8.8",
		"2606:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:80b::200e",
	} {
		f(a, false)
	}
}

func TestSSRFRefusePrivateControl(t *testing.T) {
	f := func(address string, refused bool) {
		t.Helper()
		err := refusePrivate("tcp", address, nil)
		if (err != nil) != refused {
			t.Fatalf("refusePrivate(%s) = %v, want refused %v", address, err, refused)
		}
		if err != nil && !strings.Contains(err.Error(), "destination refused") {
			t.Fatalf("refusePrivate(%s) = %q, want it to say destination refused", address, err)
		}
	}
	f("127.0.0.1:80", true)
	f("[::1]:443", true)
	f("[::ffff:10.0.0.1]:80", true)
	f("[fe80::1%eth0]:80", true)
	f("169.254.169.254:80", true)
	f("not an address", true)
	f("8.8.8.8:443", false)
	f("[2606:4700::1111]:443", false)
}

// countingListener accepts connections on a loopback address and counts
// them: a refused destination must never see one.
type countingListener struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func listenCounting(t *testing.T, network, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	c := &countingListener{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); c.wg.Wait() })
	return c
}

func (c *countingListener) port() string {
	_, p, _ := net.SplitHostPort(c.ln.Addr().String())
	return p
}

// TestSSRFRefusedDestinations delivers to private destinations with
// delivery.allow_private_networks off and checks each batch is
// dead-lettered at once with status 0 and the refusal as its error, and that
// nothing connected to the loopback listeners.
func TestSSRFRefusedDestinations(t *testing.T) {
	v4 := listenCounting(t, "tcp4", "127.0.0.1:0")
	v6 := listenCounting(t, "tcp6", "[::1]:0")
	dests := map[string]string{
		"loopback":  "http://127.0.0.1:" + v4.port() + "/hooks",
		"private":   "http://10.0.0.1:9/", // refused before connect: no traffic leaves
		"metadata":  "http://169.254.169.254/latest/meta-data/",
		"ipv6":      "http://[::1]:" + v6.port() + "/",
		"localhost": "http://localhost:" + v4.port() + "/",
		"mapped":    "http://[::ffff:127.0.0.1]:" + v4.port() + "/",
		"zero":      "http://0.0.0.0:" + v4.port() + "/",
	}
	var subs []config.Subscriber
	for id, url := range dests {
		subs = append(subs, sub(id, url, 10, 10*time.Millisecond))
	}
	cfg := testConfig(t, subs...)
	cfg.Delivery.AllowPrivateNetworks = false
	cfg.Delivery.Retry.MaxAttempts = 5
	r := startRelay(t, cfg)
	a := mustIngest(t, r, "/v1/events", `{"type":"order.created","data":{"n":1}}`)
	if a.Accepted != 1 {
		t.Fatalf("accepted %+v", a)
	}

	var dls []deadLetterView
	waitFor(t, 15*time.Second, "a dead letter per destination", func() bool {
		status, body := do(t, "GET", "http://"+r.AdminAddr()+"/v1/dead-letters", "")
		if status != 200 {
			t.Fatalf("GET /v1/dead-letters: %d %s", status, body)
		}
		dls = nil
		if err := json.Unmarshal([]byte(body), &dls); err != nil {
			t.Fatalf("dead letters %q: %v", body, err)
		}
		return len(dls) >= len(dests)
	})
	seen := map[string]bool{}
	for _, dl := range dls {
		seen[dl.Subscriber] = true
		if dl.LastStatus != 0 || dl.Attempts != 1 || dl.Count != 1 {
			t.Errorf("%s: last_status %d after %d attempts of %d events; want status 0 after 1 attempt of 1",
				dl.Subscriber, dl.LastStatus, dl.Attempts, dl.Count)
		}
		if !strings.Contains(dl.LastError, "destination refused") || !strings.Contains(dl.LastError, "allow_private_networks") {
			t.Errorf("%s: last_error %q does not say the destination was refused", dl.Subscriber, dl.LastError)
		}
	}
	for id := range dests {
		if !seen[id] {
			t.Errorf("no dead letter for %s (%s)", id, dests[id])
		}
		s := r.subscriber(id)
		if c := s.host.circuit(time.Now()); c != circuitClosed {
			t.Errorf("%s: circuit %v after a refusal, want closed", id, c)
		}
		if d := s.q.Depth(); d != 0 {
			t.Errorf("%s: %d events still queued", id, d)
		}
	}
	if n := v4.accepted.Load() + v6.accepted.Load(); n != 0 {
		t.Fatalf("loopback listeners accepted %d connections", n)
	}
}

// TestSSRFAllowPrivateNetworks checks the switch the other way: with
// delivery.allow_private_networks on, loopback is delivered to.
func TestSSRFAllowPrivateNetworks(t *testing.T) {
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 10, 10*time.Millisecond))
	cfg.Delivery.AllowPrivateNetworks = true
	r := startRelay(t, cfg)
	mustIngest(t, r, "/v1/events", `{"type":"t","data":1}`)
	waitFor(t, 10*time.Second, "delivery to loopback", func() bool { return s.Stats().Events == 1 })
}
