package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hookbatch/hookbatch/signing"
)

// Limits enforced by Validate.
const (
	minBodyBytes        = 1 << 10
	maxBodyBytes        = 64 << 20
	maxEventsPerRequest = 100_000
	minTokenLen         = 16
	maxBatchEvents      = 10_000
	maxBatchWait        = time.Hour
	maxEventTypeLen     = 128
	recommendedKeyLen   = 24 // bytes; Standard Webhooks asks for 24 to 64
)

var subscriberIDRe = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// problems collects Problems; its methods keep Validate short.
type problems []Problem

func (ps *problems) addf(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate returns every problem of c that would stop hookbatch from running
// as configured, each at its YAML path, or nil. It reads the files named by
// tls but changes nothing. No message contains a secret or token.
func (c *Config) Validate() []Problem {
	var ps problems
	checkListen(&ps, "listen", c.Listen)
	checkListen(&ps, "admin_listen", c.AdminListen)
	if sameListener(c.Listen, c.AdminListen) {
		ps.addf("admin_listen", "must differ from listen")
	}
	if c.DataDir == "" {
		ps.addf("data_dir", "is required")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		ps.addf("log_level", "must be one of debug, info, warn, error")
	}
	if !slices.Contains([]string{"json", "console"}, c.LogFormat) {
		ps.addf("log_format", "must be json or console")
	}
	positive(&ps, "shutdown_timeout", c.ShutdownTimeout)
	c.TLS.validate(&ps)
	c.Ingest.validate(&ps)
	if c.Storage.MaxDiskBytes < 0 {
		ps.addf("storage.max_disk_bytes", "must not be negative (0 means unlimited)")
	}
	c.Delivery.validate(&ps)
	if c.Admin.Token != "" {
		checkToken(&ps, "admin.token", c.Admin.Token)
	}

	ids := make(map[string]int, len(c.Subscribers))
	for i := range c.Subscribers {
		s := &c.Subscribers[i]
		path := fmt.Sprintf("subscribers[%d]", i)
		s.validate(&ps, path)
		if first, dup := ids[s.ID]; dup && s.ID != "" {
			ps.addf(path+".id", "duplicate id, also used by subscribers[%d]", first)
		} else {
			ids[s.ID] = i
		}
	}
	return ps
}

func (t *TLS) validate(ps *problems) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		if t.CertFile == "" {
			ps.addf("tls.cert_file", "is required when tls.key_file is set")
		} else {
			ps.addf("tls.key_file", "is required when tls.cert_file is set")
		}
		return
	}
	checkFile(ps, "tls.cert_file", t.CertFile)
	checkFile(ps, "tls.key_file", t.KeyFile)
}

func (in *Ingest) validate(ps *problems) {
	sizeRange(ps, "ingest.max_body_bytes", in.MaxBodyBytes, minBodyBytes, maxBodyBytes)
	intRange(ps, "ingest.max_events_per_request", in.MaxEventsPerRequest, 1, maxEventsPerRequest)
	if in.DedupWindow < 0 {
		ps.addf("ingest.dedup_window", "must not be negative (0 turns deduplication off)")
	}
	for i, tok := range in.AuthTokens {
		checkToken(ps, fmt.Sprintf("ingest.auth_tokens[%d]", i), tok)
	}
	if in.SigningSecret != "" {
		checkSecret(ps, "ingest.signing_secret", in.SigningSecret)
	}
	for i, s := range in.AllowCIDRs {
		if !validCIDR(s) {
			ps.addf(fmt.Sprintf("ingest.allow_cidrs[%d]", i), "must be a CIDR such as 10.0.0.0/8 or a single IP address")
		}
	}
	rl := in.RateLimit
	if rl.PerClientRPS < 0 {
		ps.addf("ingest.rate_limit.per_client_rps", "must not be negative (0 turns rate limiting off)")
	}
	switch {
	case rl.Burst < 0:
		ps.addf("ingest.rate_limit.burst", "must not be negative")
	case rl.Burst < 1 && rl.PerClientRPS > 0:
		ps.addf("ingest.rate_limit.burst", "must be at least 1 when ingest.rate_limit.per_client_rps is set")
	}
}

func (dl *Delivery) validate(ps *problems) {
	if dl.Concurrency < 1 {
		ps.addf("delivery.concurrency", "must be at least 1")
	}
	switch {
	case dl.PerHostConcurrency < 1:
		ps.addf("delivery.per_host_concurrency", "must be at least 1")
	case dl.Concurrency >= 1 && dl.PerHostConcurrency > dl.Concurrency:
		ps.addf("delivery.per_host_concurrency", "must not exceed delivery.concurrency (%d)", dl.Concurrency)
	}
	positive(ps, "delivery.timeout", dl.Timeout)
	if hasCtl(dl.UserAgent) {
		ps.addf("delivery.user_agent", "must not contain control characters such as CR or LF")
	}

	r := dl.Retry
	positive(ps, "delivery.retry.initial_backoff", r.InitialBackoff)
	positive(ps, "delivery.retry.max_backoff", r.MaxBackoff)
	if r.MaxBackoff > 0 && r.MaxBackoff < r.InitialBackoff {
		ps.addf("delivery.retry.max_backoff", "must not be less than delivery.retry.initial_backoff (%s)", r.InitialBackoff)
	}
	if !(r.Multiplier >= 1) {
		ps.addf("delivery.retry.multiplier", "must be at least 1")
	}
	if !(r.Jitter >= 0 && r.Jitter <= 1) {
		ps.addf("delivery.retry.jitter", "must be between 0 and 1")
	}
	if r.MaxAttempts < 1 {
		ps.addf("delivery.retry.max_attempts", "must be at least 1")
	}
	positive(ps, "delivery.retry.max_age", r.MaxAge)

	cb := dl.CircuitBreaker
	if cb.FailureThreshold < 1 {
		ps.addf("delivery.circuit_breaker.failure_threshold", "must be at least 1")
	}
	positive(ps, "delivery.circuit_breaker.open_duration", cb.OpenDuration)
}

func (s *Subscriber) validate(ps *problems, path string) {
	if !subscriberIDRe.MatchString(s.ID) {
		ps.addf(path+".id", "must be 1 to 64 characters of a-z, 0-9, _ and -")
	}
	if s.URL == "" {
		ps.addf(path+".url", "is required")
	} else if msg := checkURL(s.URL); msg != "" {
		ps.addf(path+".url", "%s", msg)
	}
	if s.Secret == "" {
		ps.addf(path+".secret", "is required")
	} else {
		checkSecret(ps, path+".secret", s.Secret)
	}
	for i, sec := range s.PreviousSecrets {
		p := fmt.Sprintf("%s.previous_secrets[%d]", path, i)
		if sec == "" {
			ps.addf(p, "must not be empty")
		} else {
			checkSecret(ps, p, sec)
		}
	}
	for i, et := range s.EventTypes {
		p := fmt.Sprintf("%s.event_types[%d]", path, i)
		switch {
		case et == "":
			ps.addf(p, "must not be empty")
		case len(et) > maxEventTypeLen:
			ps.addf(p, "must be at most %d characters", maxEventTypeLen)
		case strings.IndexFunc(et, func(r rune) bool { return !isEventTypeChar(r) }) >= 0:
			ps.addf(p, "may only contain A-Z, a-z, 0-9 and . _ : / - and the globs * ?")
		}
	}
	intRange(ps, path+".batch.max_events", s.Batch.MaxEvents, 1, maxBatchEvents)
	sizeRange(ps, path+".batch.max_bytes", s.Batch.MaxBytes, minBodyBytes, maxBodyBytes)
	if s.Batch.MaxWait <= 0 || s.Batch.MaxWait > maxBatchWait {
		ps.addf(path+".batch.max_wait", "must be greater than 0 and at most %s", maxBatchWait)
	}

	names := make([]string, 0, len(s.Headers))
	for name := range s.Headers {
		names = append(names, name)
	}
	slices.Sort(names) // map order is random; problems come in a stable one
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		p := childPath(path+".headers", name)
		canon := strings.ToLower(name)
		switch {
		case !isToken(name):
			ps.addf(p, "header name must be a non-empty HTTP token (letters, digits and !#$%%&'*+-.^_`|~)")
		case isReservedHeader(canon):
			ps.addf(p, "header is set by hookbatch and cannot be configured")
		case seen[canon]:
			ps.addf(p, "duplicate header name (names are case-insensitive)")
		}
		seen[canon] = true
		if hasCtl(s.Headers[name]) {
			ps.addf(p, "header value must not contain control characters such as CR or LF")
		}
	}
}

// checkListen checks that addr is host:port with a numeric port.
func checkListen(ps *problems, path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.addf(path, "must be host:port, such as 127.0.0.1:8080 or :8080")
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		ps.addf(path, "port must be a number from 0 to 65535")
	}
}

// sameListener reports whether listening on a and b would clash: the same
// non-zero port on the same host, or on any host when either is a wildcard.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	return ha == hb || isWildcard(ha) || isWildcard(hb)
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

// checkFile checks that a configured file exists and is not a directory;
// an empty name is allowed.
func checkFile(ps *problems, path, name string) {
	if name == "" {
		return
	}
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ps.addf(path, "file does not exist")
	case err != nil:
		ps.addf(path, "cannot use file: %s", err)
	case fi.IsDir():
		ps.addf(path, "is a directory, not a file")
	}
}

// checkToken checks a bearer token, without quoting it.
func checkToken(ps *problems, path, tok string) {
	switch {
	case tok == "":
		ps.addf(path, "must not be empty")
	case len(tok) < minTokenLen:
		ps.addf(path, "must be at least %d characters", minTokenLen)
	case hasSpace(tok):
		ps.addf(path, "must not contain spaces or control characters")
	}
}

// checkSecret checks a non-empty signing secret by the key rule of DESIGN
// §6, without quoting it.
func checkSecret(ps *problems, path, secret string) {
	if _, err := signing.DecodeSecret(secret); err != nil {
		ps.addf(path, "%s", err)
	}
}

// checkURL returns what is wrong with a subscriber URL, or "". The message
// never quotes the URL, which may carry credentials in its query.
func checkURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case hasSpace(s):
		return "must not contain spaces or control characters"
	case err != nil || u.Opaque != "":
		return "must be an absolute http or https URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute URL with scheme http or https"
	case u.Hostname() == "":
		return "must have a host"
	case u.User != nil:
		return "must not contain user info (user:password@); use headers for credentials"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "must not contain a fragment (#...)"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "port must be a number from 1 to 65535"
		}
	}
	return ""
}

// validCIDR reports whether s is a CIDR prefix or a single IP address.
func validCIDR(s string) bool {
	if _, _, err := net.ParseCIDR(s); err == nil {
		return true
	}
	return net.ParseIP(s) != nil
}

func positive(ps *problems, path string, d time.Duration) {
	if d <= 0 {
		ps.addf(path, "must be greater than 0")
	}
}

func intRange(ps *problems, path string, n, lo, hi int) {
	if n < lo || n > hi {
		ps.addf(path, "must be between %d and %d", lo, hi)
	}
}

func sizeRange(ps *problems, path string, n, lo, hi ByteSize) {
	if n < lo || n > hi {
		ps.addf(path, "must be between %s and %s", lo, hi)
	}
}

func isEventTypeChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("._:/*?-", r)
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2), the syntax
// of a header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

// reservedHeaders are the lowercase header names hookbatch sets itself or
// that would break framing of the request it sends.
var reservedHeaders = []string{
	"content-type", "content-length", "content-encoding", "host", "user-agent",
	"connection", "transfer-encoding", "te", "trailer", "upgrade", "keep-alive",
}

func isReservedHeader(lower string) bool {
	return slices.Contains(reservedHeaders, lower) ||
		strings.HasPrefix(lower, "x-webhook-") || strings.HasPrefix(lower, "webhook-")
}

// hasCtl reports whether s holds a control character other than tab, which
// no header value may contain.
func hasCtl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

// hasSpace reports whether s holds white space or a control character,
// which a token or URL sent in an HTTP request line or header cannot.
func hasSpace(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// Warnings returns notices about c that do not stop hookbatch from running
// but probably deserve a look, each at its YAML path. Like Validate, it never
// quotes a secret.
func (c *Config) Warnings() []Problem {
	var ps problems
	in := &c.Ingest
	if !isLoopbackHost(c.Listen) && len(in.AuthTokens) == 0 && in.SigningSecret == "" && len(in.AllowCIDRs) == 0 {
		ps.addf("listen", "ingest is reachable from other hosts without authentication; set ingest.auth_tokens, ingest.signing_secret or ingest.allow_cidrs")
	}
	if !isLoopbackHost(c.AdminListen) && c.Admin.Token == "" {
		ps.addf("admin_listen", "the admin API is reachable from other hosts without a token; set admin.token")
	}
	if in.RateLimit.PerClientRPS == 0 && in.RateLimit.Burst > 0 {
		ps.addf("ingest.rate_limit.burst", "has no effect while ingest.rate_limit.per_client_rps is 0")
	}
	if in.SigningSecret != "" {
		shortKey(&ps, "ingest.signing_secret", in.SigningSecret)
	}
	if !c.Storage.SyncWrites {
		ps.addf("storage.sync_writes", "is false: acknowledged events may be lost if the machine crashes")
	}
	// Storage writes its value log in files of 64 MiB, or twice the largest
	// body, and cannot give back the one it is writing.
	if vlog := max(ByteSize(64<<20), 2*in.MaxBodyBytes); c.Storage.MaxDiskBytes > 0 && c.Storage.MaxDiskBytes < 4*vlog {
		ps.addf("storage.max_disk_bytes", "is under %d MiB (4 value-log files of %d MiB): the store may stay full after its backlog is delivered", 4*vlog>>20, vlog>>20)
	}
	if len(c.Subscribers) == 0 {
		ps.addf("subscribers", "none configured: every event sent to /v1/events will be refused with 422")
	}
	for i := range c.Subscribers {
		s := &c.Subscribers[i]
		path := fmt.Sprintf("subscribers[%d]", i)
		if !c.Delivery.AllowPrivateNetworks && isPrivateURL(s.URL) {
			ps.addf(path+".url", "delivery to a private address will be refused at dial time unless delivery.allow_private_networks is true")
		}
		shortKey(&ps, path+".secret", s.Secret)
		for j, sec := range s.PreviousSecrets {
			shortKey(&ps, fmt.Sprintf("%s.previous_secrets[%d]", path, j), sec)
		}
	}
	return ps
}

// shortKey warns when the key of a valid secret is shorter than Standard
// Webhooks recommends.
func shortKey(ps *problems, path, secret string) {
	if key, err := signing.DecodeSecret(secret); err == nil && len(key) < recommendedKeyLen {
		ps.addf(path, "signing key is shorter than %d bytes; use a random whsec_ secret of 24 to 64 bytes", recommendedKeyLen)
	}
}

// isLoopbackHost reports whether listen address addr accepts connections from
// this machine only.
func isLoopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // invalid: Validate reports it
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// isPrivateURL reports whether rawURL names "localhost" or a loopback,
// private, link-local or unspecified IP literal: destinations the SSRF
// guard refuses. Host names are resolved only at dial time, so other names
// are not judged here.
func isPrivateURL(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsUnspecified()
}
