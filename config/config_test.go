package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Secrets used by the tests; each is valid.
const (
	testSecret     = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3" // 24-byte key
	testPrevSecret = "whsec_cHJldmlvdXMta2V5LXByZXZpb3VzLWtleQ=="
	testSignSecret = "whsec_aW5nZXN0LXNpZ25pbmcta2V5LWluZ2VzdA=="
	testPlainSec   = "plain-secret-value-long-enough"
	testToken1     = "ingest-token-aaaaaaaaaaaa"
	testToken2     = "ingest-token-bbbbbbbbbbbb"
	testAdminToken = "admin-token-0123456789"
)

// noEnv is a lookupEnv that knows no variables.
func noEnv(string) (string, bool) { return "", false }

// fakeEnv returns a lookupEnv that knows exactly the variables of m.
func fakeEnv(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// problemStrings returns the problems of err as "path: msg" strings; err
// must be nil or an *Error.
func problemStrings(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, not *Error: %v", err, err)
	}
	var out []string
	for _, p := range e.Problems {
		out = append(out, p.String())
	}
	return out
}

// mustParse parses a document that must be valid.
func mustParse(t *testing.T, doc string) Config {
	t.Helper()
	c, err := Parse([]byte(doc), noEnv)
	if err != nil {
		t.Fatalf("unexpected error parsing\n%s\n%s", doc, err)
	}
	return c
}

func TestDefault(t *testing.T) {
	def := Default()
	if ps := def.Validate(); len(ps) > 0 {
		t.Fatalf("Default() is invalid: %v", ps)
	}
	f := func(doc string) {
		t.Helper()
		c := mustParse(t, doc)
		if !reflect.DeepEqual(c, def) {
			t.Fatalf("Parse(%q) = %+v, want Default() %+v", doc, c, def)
		}
	}
	f("")
	f("\n\n")
	f("# only a comment\n   # and another\n")
	f("---\n")
	f("~\n")
	f("null")
	f("{}")
	f("listen:\ningest:\ndelivery:\n  retry: ~\nsubscribers:\n")
	f("listen: 127.0.0.1:8080\ningest: {max_body_bytes: 1MiB}\n")
}

// fullConfig sets every key of the contract to something other than its
// default.
const fullConfig = `
listen: 0.0.0.0:9000
admin_listen: "[::1]:9001"
data_dir: /var/lib/hookbatch
log_level: debug
log_format: console
shutdown_timeout: 45s
tls:
  cert_file: CERT
  key_file: KEY
ingest:
  max_body_bytes: 2MiB
  max_events_per_request: 500
  dedup_window: 1h30m
  auth_tokens: [` + testToken1 + `, "` + testToken2 + `"]
  signing_secret: ` + testSignSecret + `
  allow_cidrs: [10.0.0.0/8, "::1"]
  rate_limit: {per_client_rps: 50.5, burst: 100}
storage:
  sync_writes: false
  max_disk_bytes: 10GiB
delivery:
  concurrency: 64
  per_host_concurrency: 8
  timeout: 5s
  user_agent: acme-relay/1.0
  allow_private_networks: true
  retry:
    initial_backoff: 500ms
    max_backoff: 1m
    multiplier: 1.5
    jitter: 0.1
    max_attempts: 5
    max_age: 2h
  circuit_breaker: {failure_threshold: 3, open_duration: 10s}
admin:
  token: ` + testAdminToken + `
subscribers:
  - id: orders
    url: https://orders.example.com/hooks?x=1
    secret: ` + testSecret + `
    previous_secrets: [` + testPrevSecret + `, ` + testPlainSec + `]
    event_types: ["order.*", refund.created]
    batch: {max_events: 500, max_bytes: 4MiB, max_wait: 250ms}
    ordered: true
    headers:
      X-Env: prod
      Authorization: Bearer abc
  - id: audit_2
    url: http://10.1.2.3:8080/in
    secret: ` + testPlainSec + `
    batch:
      max_events: 10
`

// writeTLSFiles creates placeholder certificate and key files, which
// Validate only requires to exist.
func writeTLSFiles(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, name := range []string{cert, key} {
		if err := os.WriteFile(name, []byte("placeholder"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

func TestParseEveryKey(t *testing.T) {
	cert, key := writeTLSFiles(t)
	doc := strings.NewReplacer("CERT", cert, "KEY", key).Replace(fullConfig)
	c := mustParse(t, doc)

	want := Config{
		Listen:          "0.0.0.0:9000",
		AdminListen:     "[::1]:9001",
		DataDir:         "/var/lib/hookbatch",
		LogLevel:        "debug",
		LogFormat:       "console",
		ShutdownTimeout: 45 * time.Second,
		TLS:             TLS{CertFile: cert, KeyFile: key},
		Ingest: Ingest{
			MaxBodyBytes:        2 << 20,
			MaxEventsPerRequest: 500,
			DedupWindow:         90 * time.Minute,
			AuthTokens:          []string{testToken1, testToken2},
			SigningSecret:       testSignSecret,
			AllowCIDRs:          []string{"10.0.0.0/8", "::1"},
			RateLimit:           RateLimit{PerClientRPS: 50.5, Burst: 100},
		},
		Storage: Storage{SyncWrites: false, MaxDiskBytes: 10 << 30},
		Delivery: Delivery{
			Concurrency:          64,
			PerHostConcurrency:   8,
			Timeout:              5 * time.Second,
			UserAgent:            "acme-relay/1.0",
			AllowPrivateNetworks: true,
			Retry: Retry{
				InitialBackoff: 500 * time.Millisecond,
				MaxBackoff:     time.Minute,
				Multiplier:     1.5,
				Jitter:         0.1,
				MaxAttempts:    5,
				MaxAge:         2 * time.Hour,
			},
			CircuitBreaker: CircuitBreaker{FailureThreshold: 3, OpenDuration: 10 * time.Second},
		},
		Admin: Admin{Token: testAdminToken},
		Subscribers: []Subscriber{
			{
				ID:              "orders",
				URL:             "https://orders.example.com/hooks?x=1",
				Secret:          testSecret,
				PreviousSecrets: []string{testPrevSecret, testPlainSec},
				EventTypes:      []string{"order.*", "refund.created"},
				Batch:           Batch{MaxEvents: 500, MaxBytes: 4 << 20, MaxWait: 250 * time.Millisecond},
				Ordered:         true,
				Headers:         map[string]string{"X-Env": "prod", "Authorization": "Bearer abc"},
			},
			{
				ID:     "audit_2",
				URL:    "http://10.1.2.3:8080/in",
				Secret: testPlainSec,
				Batch:  Batch{MaxEvents: 10, MaxBytes: DefaultBatch.MaxBytes, MaxWait: DefaultBatch.MaxWait},
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("unexpected config\ngot  %+v\nwant %+v", c, want)
	}

	// Guard against a key added to Config but not to fullConfig: every leaf
	// of the first subscriber and of the rest must differ from its default.
	def := Default()
	def.Subscribers = []Subscriber{{Batch: DefaultBatch}}
	for _, path := range differingLeaves(reflect.ValueOf(c), reflect.ValueOf(def), "") {
		t.Errorf("fullConfig leaves %s at its default", path)
	}
}

// differingLeaves returns the paths of the leaves of got that equal those
// of def; slices are compared by their first element.
func differingLeaves(got, def reflect.Value, path string) []string {
	switch got.Kind() {
	case reflect.Struct:
		var out []string
		for i := range got.NumField() {
			name, _, _ := strings.Cut(got.Type().Field(i).Tag.Get("yaml"), ",")
			out = append(out, differingLeaves(got.Field(i), def.Field(i), childPath(path, name))...)
		}
		return out
	case reflect.Slice:
		if got.Type().Elem().Kind() == reflect.Struct {
			if got.Len() == 0 || def.Len() == 0 {
				return []string{path}
			}
			return differingLeaves(got.Index(0), def.Index(0), path+"[0]")
		}
	}
	if reflect.DeepEqual(got.Interface(), def.Interface()) {
		return []string{path}
	}
	return nil
}

func TestParseEnv(t *testing.T) {
	env := fakeEnv(map[string]string{
		"SECRET":  testSecret,
		"HOST":    "hooks.example.com",
		"CONC":    "16",
		"TIMEOUT": "3s",
		"SIZE":    "2MiB",
		"YES":     "true",
		"EMPTY":   "",
		"TOKEN":   testToken1,
	})
	doc := `
ingest:
  auth_tokens: ["${TOKEN}"]
  max_body_bytes: ${SIZE}
delivery:
  concurrency: ${CONC}
  per_host_concurrency: 4
  timeout: ${TIMEOUT}
  allow_private_networks: ${YES}
  user_agent: "a${EMPTY}b $${NOT_EXPANDED} $$ $x {y}"
subscribers:
  - id: s
    url: https://${HOST}/in
    secret: ${SECRET}
`
	c, err := Parse([]byte(doc), env)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Delivery
	if d.Concurrency != 16 || d.Timeout != 3*time.Second || !d.AllowPrivateNetworks {
		t.Fatalf("unexpected delivery %+v", d)
	}
	if got, want := d.UserAgent, "ab ${NOT_EXPANDED} $$ $x {y}"; got != want {
		t.Fatalf("user_agent = %q, want %q", got, want)
	}
	if c.Ingest.MaxBodyBytes != 2<<20 || !slices.Equal(c.Ingest.AuthTokens, []string{testToken1}) {
		t.Fatalf("unexpected ingest %+v", c.Ingest)
	}
	s := c.Subscribers[0]
	if s.URL != "https://hooks.example.com/in" || s.Secret != testSecret {
		t.Fatalf("unexpected subscriber %+v", s)
	}

	problems := func(doc string, want ...string) error {
		t.Helper()
		_, err := Parse([]byte(doc), env)
		if got := problemStrings(t, err); !slices.Equal(got, want) {
			t.Fatalf("unexpected problems for\n%s\ngot  %q\nwant %q", doc, got, want)
		}
		return err
	}

	// Unset and malformed references are problems naming the variable,
	// never the value of another.
	err = problems(`
admin:
  token: ${ADMIN_TOKEN}
subscribers:
  - id: s
    url: https://${HOST}/in
    secret: ${MISSING_SECRET}
    previous_secrets: ["${1BAD}", "${SECRET", "${SECRET}"]
`,
		"admin.token: environment variable ADMIN_TOKEN is not set",
		"subscribers[0].secret: environment variable MISSING_SECRET is not set",
		"subscribers[0].previous_secrets[0]: has an invalid environment variable name in ${...} (write $${ for a literal ${)",
		"subscribers[0].previous_secrets[1]: has an unterminated ${ (write $${ for a literal ${)",
	)
	if strings.Contains(err.Error(), testSecret) {
		t.Fatalf("error quotes a secret: %s", err)
	}

	// A token or secret from a variable set but empty would switch a
	// protection off: a problem. Elsewhere an empty variable is a value.
	problems(`
admin:
  token: ${EMPTY}
ingest:
  signing_secret: "${EMPTY}"
  auth_tokens: ["${EMPTY}${EMPTY}"]
delivery:
  user_agent: "${EMPTY}"
subscribers:
  - id: s
    url: https://${HOST}/in
    secret: ${EMPTY}
    previous_secrets: ["${EMPTY}"]
`,
		"admin.token: environment variable EMPTY is empty",
		"ingest.signing_secret: environment variable EMPTY is empty",
		"ingest.auth_tokens[0]: environment variable EMPTY is empty",
		"subscribers[0].secret: environment variable EMPTY is empty",
		"subscribers[0].previous_secrets[0]: environment variable EMPTY is empty",
	)
}

func TestParseProblems(t *testing.T) {
	f := func(doc string, want ...string) {
		t.Helper()
		_, err := Parse([]byte(doc), noEnv)
		got := problemStrings(t, err)
		if !slices.Equal(got, want) {
			t.Fatalf("unexpected problems for\n%s\ngot  %q\nwant %q", doc, got, want)
		}
	}
	sub := "  - {id: a, url: 'http://a.example', secret: s}\n"

	// A secret written unquoted after '!' (a YAML tag) or '*' (an alias)
	// is refused, and not quoted in the problem.
	f("admin:\n  token: !Adm1nT0kenSecret0001", "admin.token: a value starting with '!' is read as a YAML tag; quote it")
	f("admin:\n  token: *TopSecretAdminToken123", "(root): invalid YAML: a value starting with '*' is read as an alias; quote it")

	// Unknown keys at every level.
	f("bogus: 1", "bogus: unknown key")
	f("delivery:\n  retry:\n    max_backof: 5m", "delivery.retry.max_backof: unknown key")
	f("subscribers:\n"+sub+"  - {id: b, url: 'http://b.example', secret: s, batch_size: 3}",
		"subscribers[1].batch_size: unknown key")
	f("subscribers:\n"+sub+"  - {id: b, url: 'http://b.example', secret: s, batch: {max: 1}}",
		"subscribers[1].batch.max: unknown key")
	f(`"odd key": 1`, `["odd key"]: unknown key`)
	f("Listen: x", "Listen: unknown key")

	// Duplicate keys, in structs and in header maps.
	f("log_level: info\nlog_level: debug", "log_level: duplicate key")
	f("subscribers:\n  - {id: a, url: 'http://a.example', secret: s, headers: {X-A: 1, X-A: 2}}",
		"subscribers[0].headers.X-A: duplicate key")

	// Wrong types; a value that fails to decode keeps its default and is
	// not reported again by validation.
	f("shutdown_timeout: 30", "shutdown_timeout: must be a duration such as 30s")
	f("shutdown_timeout: [1s]", "shutdown_timeout: must be a duration such as 30s")
	f("delivery: {concurrency: many}", "delivery.concurrency: must be an integer")
	f("delivery: {concurrency: 1.5}", "delivery.concurrency: must be an integer")
	f("delivery: {concurrency: 99999999999999999999}", "delivery.concurrency: is out of range")
	f("storage: {sync_writes: yes}", "storage.sync_writes: must be a boolean (true or false)")
	f("delivery: {retry: {jitter: .nan}}", "delivery.retry.jitter: must be a number")
	f("delivery: {retry: {multiplier: .inf}}", "delivery.retry.multiplier: must be a number")
	f("ingest: {max_body_bytes: lots}", "ingest.max_body_bytes: must be a byte size such as 1048576, 64KiB, 1MiB or 10GiB")
	f("ingest: {max_body_bytes: -1}", "ingest.max_body_bytes: must not be negative")
	f("ingest: {auth_tokens: abc}", "ingest.auth_tokens: must be a list")
	f("ingest: {auth_tokens: [[a]]}", "ingest.auth_tokens[0]: must be a string")
	f("ingest: {auth_tokens: [~]}", "ingest.auth_tokens[0]: must be a string, not null")
	f("tls: on", "tls: must be a mapping")
	f("subscribers: {id: a}", "subscribers: must be a list")
	f("subscribers:\n  - ~\n", "subscribers[0]: must be a mapping, not null")
	f("subscribers:\n  - {id: a, url: [x], secret: s}", "subscribers[0].url: must be a string")
	f("subscribers:\n  - {id: a, url: 'http://a.example', secret: s, headers: [a]}",
		"subscribers[0].headers: must be a mapping")
	f("[1, 2]", "(root): must be a mapping")
	f("just a string", "(root): must be a mapping")

	// Documents that are not YAML, or more than one.
	f("listen: [", "(root): invalid YAML: line 1: did not find expected node content")
	f("a: 1\n---\nb: 2", "(root): only one YAML document is allowed", "a: unknown key")

	// Several problems at once, decoding and validation together, in
	// document order then in validation order.
	f(`
log_level: loud
shutdown_timeout: soon
unknown_top: 1
ingest:
  max_events_per_request: 0
  auth_tokens: [short]
delivery:
  per_host_concurrency: 512
  retry: {initial_backoff: 1m, max_backoff: 1s, typo: 1}
subscribers:
  - id: Bad ID
    url: ftp://x.example
    secret: whsec_!!!
  - id: ok
    url: https://ok.example
    secret: s
    batch: {max_events: 0, max_wait: 2h}
    headers: {Content-Type: text/plain, webhook-id: x, "Bad Name": v, X-Ok: "a\nb"}
  - id: ok
    url: http://user:pw@ok.example
`,
		"shutdown_timeout: must be a duration such as 30s",
		"unknown_top: unknown key",
		"delivery.retry.typo: unknown key",
		"log_level: must be one of debug, info, warn, error",
		"ingest.max_events_per_request: must be between 1 and 100000",
		"ingest.auth_tokens[0]: must be at least 16 characters",
		"delivery.per_host_concurrency: must not exceed delivery.concurrency (256)",
		"delivery.retry.max_backoff: must not be less than delivery.retry.initial_backoff (1m0s)",
		"subscribers[0].id: must be 1 to 64 characters of a-z, 0-9, _ and -",
		"subscribers[0].url: must be an absolute URL with scheme http or https",
		"subscribers[0].secret: whsec_ secret is not valid standard base64 (at byte 0 after the prefix)",
		"subscribers[1].batch.max_events: must be between 1 and 10000",
		"subscribers[1].batch.max_wait: must be greater than 0 and at most 1h0m0s",
		`subscribers[1].headers["Bad Name"]: header name must be a non-empty HTTP token (letters, digits and !#$%&'*+-.^_`+"`"+`|~)`,
		"subscribers[1].headers.Content-Type: header is set by hookbatch and cannot be configured",
		"subscribers[1].headers.X-Ok: header value must not contain control characters such as CR or LF",
		"subscribers[1].headers.webhook-id: header is set by hookbatch and cannot be configured",
		"subscribers[2].url: must not contain user info (user:password@); use headers for credentials",
		"subscribers[2].secret: is required",
		"subscribers[2].id: duplicate id, also used by subscribers[1]",
	)
}

func TestParseAliasesAndMerges(t *testing.T) {
	c := mustParse(t, `
subscribers:
  - &base
    id: a
    url: https://a.example/in
    secret: `+testSecret+`
    batch: &batch {max_events: 7, max_wait: 2s}
    headers: &hdrs {X-Team: core}
  - <<: *base
    id: b
    headers: {<<: *hdrs, X-Extra: "1"}
  - <<: [{id: c, ordered: true}, *base]
    batch: *batch
`)
	if len(c.Subscribers) != 3 {
		t.Fatalf("got %d subscribers, want 3", len(c.Subscribers))
	}
	a, b, cc := c.Subscribers[0], c.Subscribers[1], c.Subscribers[2]
	wantBatch := Batch{MaxEvents: 7, MaxBytes: DefaultBatch.MaxBytes, MaxWait: 2 * time.Second}
	if a.Batch != wantBatch || b.Batch != wantBatch || cc.Batch != wantBatch {
		t.Fatalf("unexpected batches %+v %+v %+v", a.Batch, b.Batch, cc.Batch)
	}
	if b.ID != "b" || b.URL != a.URL || !reflect.DeepEqual(b.Headers, map[string]string{"X-Team": "core", "X-Extra": "1"}) {
		t.Fatalf("unexpected merged subscriber %+v", b)
	}
	if cc.ID != "c" || !cc.Ordered || cc.Secret != testSecret {
		t.Fatalf("unexpected merged subscriber %+v", cc)
	}

	// A mapping cannot merge itself.
	_, err := Parse([]byte("delivery: &d {<<: *d}"), noEnv)
	if got := problemStrings(t, err); len(got) == 0 {
		t.Fatal("expected a problem for a self-merging mapping")
	}
}

func TestByteSize(t *testing.T) {
	f := func(s string, want ByteSize) {
		t.Helper()
		got, err := ParseByteSize(s)
		if err != nil {
			t.Fatalf("ParseByteSize(%q): %v", s, err)
		}
		if got != want {
			t.Fatalf("ParseByteSize(%q) = %d, want %d", s, got, want)
		}
		// What String prints parses back to the same size.
		if back, err := ParseByteSize(got.String()); err != nil || back != got {
			t.Fatalf("ParseByteSize(%q.String() = %q) = %d, %v", s, got.String(), back, err)
		}
	}
	f("0", 0)
	f("512", 512)
	f("+512", 512)
	f("512B", 512)
	f("64KiB", 64<<10)
	f("64 KiB", 64<<10)
	f("1MiB", 1<<20)
	f("1mib", 1<<20)
	f("10GiB", 10<<30)
	f("2TiB", 2<<40)
	f("1KB", 1000)
	f("1MB", 1_000_000)
	f("1GB", 1_000_000_000)
	f("3TB", 3_000_000_000_000)
	f(" 7 ", 7)

	fail := func(s, want string) {
		t.Helper()
		_, err := ParseByteSize(s)
		if err == nil || err.Error() != want {
			t.Fatalf("ParseByteSize(%q) error = %v, want %q", s, err, want)
		}
	}
	const syntax = "must be a byte size such as 1048576, 64KiB, 1MiB or 10GiB"
	fail("", syntax)
	fail("MiB", syntax)
	fail("1.5MiB", syntax)
	fail("1 M", syntax)
	fail("0x10", syntax)
	fail("1MiB2", syntax)
	fail("-", syntax)
	fail("-1", "must not be negative")
	fail("-1KiB", "must not be negative")
	fail("-99999999999999999999", "must not be negative")
	fail("99999999999999999999", "is too large")
	fail("9000000TiB", "is too large")

	for _, tc := range []struct {
		b    ByteSize
		want string
	}{{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {1536, "1536"}, {1 << 20, "1MiB"}, {3 << 30, "3GiB"}, {5 << 40, "5TiB"}} {
		if got := tc.b.String(); got != tc.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tc.b), got, tc.want)
		}
	}

	// In YAML, integers and strings both work.
	c := mustParse(t, "ingest: {max_body_bytes: 65536}\nstorage: {max_disk_bytes: \"10GiB\"}\nsubscribers: [{id: a, url: 'http://a.example', secret: s, batch: {max_bytes: 64KiB}}]")
	if c.Ingest.MaxBodyBytes != 64<<10 || c.Storage.MaxDiskBytes != 10<<30 || c.Subscribers[0].Batch.MaxBytes != 64<<10 {
		t.Fatalf("unexpected sizes: %d %d %d", c.Ingest.MaxBodyBytes, c.Storage.MaxDiskBytes, c.Subscribers[0].Batch.MaxBytes)
	}
}

func TestDurations(t *testing.T) {
	f := func(value string, want time.Duration) {
		t.Helper()
		c := mustParse(t, "ingest: {dedup_window: "+value+"}")
		if c.Ingest.DedupWindow != want {
			t.Fatalf("dedup_window: %s = %s, want %s", value, c.Ingest.DedupWindow, want)
		}
	}
	f("0", 0)
	f("0s", 0)
	f("30s", 30*time.Second)
	f(`"1h30m"`, 90*time.Minute)
	f("250ms", 250*time.Millisecond)
	f("1.5h", 90*time.Minute)

	fail := func(doc string, want ...string) {
		t.Helper()
		_, err := Parse([]byte(doc), noEnv)
		if got := problemStrings(t, err); !slices.Equal(got, want) {
			t.Fatalf("unexpected problems for %s\ngot  %q\nwant %q", doc, got, want)
		}
	}
	fail("shutdown_timeout: 10", "shutdown_timeout: must be a duration such as 30s")
	fail("shutdown_timeout: 10 seconds", "shutdown_timeout: must be a duration such as 30s")
	fail("shutdown_timeout: 0s", "shutdown_timeout: must be greater than 0")
	fail("shutdown_timeout: -1s", "shutdown_timeout: must be greater than 0")
	fail("ingest: {dedup_window: -1s}", "ingest.dedup_window: must not be negative (0 turns deduplication off)")
}

// validConfig returns a valid configuration with one subscriber.
func validConfig() Config {
	c := Default()
	b := DefaultBatch
	c.Subscribers = []Subscriber{{ID: "a", URL: "https://a.example/in", Secret: testSecret, Batch: b}}
	return c
}

func TestValidate(t *testing.T) {
	f := func(mutate func(c *Config), want ...string) {
		t.Helper()
		c := validConfig()
		mutate(&c)
		var got []string
		for _, p := range c.Validate() {
			got = append(got, p.String())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("unexpected problems\ngot  %q\nwant %q", got, want)
		}
	}
	s := func(c *Config) *Subscriber { return &c.Subscribers[0] }

	f(func(c *Config) {})
	f(func(c *Config) { c.Listen = "8080" }, "listen: must be host:port, such as 127.0.0.1:8080 or :8080")
	f(func(c *Config) { c.Listen = ":http" }, "listen: port must be a number from 0 to 65535")
	f(func(c *Config) { c.Listen = ":65536" }, "listen: port must be a number from 0 to 65535")
	f(func(c *Config) { c.Listen = ":8080" })
	f(func(c *Config) { c.AdminListen = c.Listen }, "admin_listen: must differ from listen")
	f(func(c *Config) { c.AdminListen = "0.0.0.0:8080" }, "admin_listen: must differ from listen")
	f(func(c *Config) { c.Listen, c.AdminListen = "127.0.0.1:0", "127.0.0.1:0" })
	f(func(c *Config) { c.AdminListen = "127.0.0.2:8080" })
	f(func(c *Config) { c.DataDir = "" }, "data_dir: is required")
	f(func(c *Config) { c.LogFormat = "text" }, "log_format: must be json or console")
	f(func(c *Config) { c.TLS.CertFile = "cert.pem" }, "tls.key_file: is required when tls.cert_file is set")
	f(func(c *Config) { c.TLS.KeyFile = "key.pem" }, "tls.cert_file: is required when tls.key_file is set")
	f(func(c *Config) { c.TLS = TLS{CertFile: "/nonexistent/c.pem", KeyFile: os.TempDir()} },
		"tls.cert_file: file does not exist", "tls.key_file: is a directory, not a file")

	f(func(c *Config) { c.Ingest.MaxBodyBytes = 1023 }, "ingest.max_body_bytes: must be between 1KiB and 64MiB")
	f(func(c *Config) { c.Ingest.MaxBodyBytes = 64<<20 + 1 }, "ingest.max_body_bytes: must be between 1KiB and 64MiB")
	f(func(c *Config) { c.Ingest.MaxBodyBytes = 64 << 20 })
	f(func(c *Config) { c.Ingest.MaxEventsPerRequest = 100_001 }, "ingest.max_events_per_request: must be between 1 and 100000")
	f(func(c *Config) { c.Ingest.DedupWindow = 0 })
	f(func(c *Config) { c.Ingest.AuthTokens = []string{testToken1, "", "has a space in it!"} },
		"ingest.auth_tokens[1]: must not be empty", "ingest.auth_tokens[2]: must not contain spaces or control characters")
	f(func(c *Config) { c.Ingest.SigningSecret = "whsec_" }, "ingest.signing_secret: whsec_ secret holds an empty key")
	f(func(c *Config) {
		c.Ingest.AllowCIDRs = []string{"10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "10.0.0.0/33", "host"}
	},
		"ingest.allow_cidrs[4]: must be a CIDR such as 10.0.0.0/8 or a single IP address",
		"ingest.allow_cidrs[5]: must be a CIDR such as 10.0.0.0/8 or a single IP address")
	f(func(c *Config) { c.Ingest.RateLimit = RateLimit{PerClientRPS: 10} },
		"ingest.rate_limit.burst: must be at least 1 when ingest.rate_limit.per_client_rps is set")
	f(func(c *Config) { c.Ingest.RateLimit = RateLimit{PerClientRPS: -1, Burst: -1} },
		"ingest.rate_limit.per_client_rps: must not be negative (0 turns rate limiting off)",
		"ingest.rate_limit.burst: must not be negative")
	f(func(c *Config) { c.Storage.MaxDiskBytes = -1 }, "storage.max_disk_bytes: must not be negative (0 means unlimited)")

	f(func(c *Config) { c.Delivery.Concurrency = 0 }, "delivery.concurrency: must be at least 1")
	f(func(c *Config) { c.Delivery.PerHostConcurrency = 0 }, "delivery.per_host_concurrency: must be at least 1")
	f(func(c *Config) { c.Delivery.Timeout = 0 }, "delivery.timeout: must be greater than 0")
	f(func(c *Config) { c.Delivery.UserAgent = "x\r\nEvil: 1" }, "delivery.user_agent: must not contain control characters such as CR or LF")
	f(func(c *Config) {
		c.Delivery.Retry = Retry{Multiplier: 0.5, Jitter: 1.5}
		c.Delivery.CircuitBreaker = CircuitBreaker{}
	},
		"delivery.retry.initial_backoff: must be greater than 0",
		"delivery.retry.max_backoff: must be greater than 0",
		"delivery.retry.multiplier: must be at least 1",
		"delivery.retry.jitter: must be between 0 and 1",
		"delivery.retry.max_attempts: must be at least 1",
		"delivery.retry.max_age: must be greater than 0",
		"delivery.circuit_breaker.failure_threshold: must be at least 1",
		"delivery.circuit_breaker.open_duration: must be greater than 0",
	)
	f(func(c *Config) { c.Delivery.Retry.Jitter = 0; c.Delivery.Retry.Multiplier = 1 })
	f(func(c *Config) { c.Admin.Token = "short" }, "admin.token: must be at least 16 characters")

	f(func(c *Config) { s(c).ID = strings.Repeat("a", 65) }, "subscribers[0].id: must be 1 to 64 characters of a-z, 0-9, _ and -")
	f(func(c *Config) { s(c).ID = strings.Repeat("a", 64) })
	f(func(c *Config) { s(c).ID = "a_b-9" })
	for _, u := range []string{"http://a.example", "https://a.example:8443/x?y=z", "HTTPS://A.EXAMPLE/"} {
		f(func(c *Config) { s(c).URL = u })
	}
	for u, msg := range map[string]string{
		"":                        "is required",
		"a.example/in":            "must be an absolute URL with scheme http or https",
		"/in":                     "must be an absolute URL with scheme http or https",
		"mailto:x@a.example":      "must be an absolute http or https URL",
		"http:///in":              "must have a host",
		"http://:80/in":           "must have a host",
		"https://a.example/#frag": "must not contain a fragment (#...)",
		"https://a.example:0/":    "port must be a number from 1 to 65535",
		"https://a.example:70000": "port must be a number from 1 to 65535",
		"https://a.example/a b":   "must not contain spaces or control characters",
		"http://%zz":              "must be an absolute http or https URL",
	} {
		f(func(c *Config) { s(c).URL = u }, "subscribers[0].url: "+msg)
	}
	f(func(c *Config) { s(c).Secret = "" }, "subscribers[0].secret: is required")
	f(func(c *Config) { s(c).Secret = "x" })
	f(func(c *Config) { s(c).PreviousSecrets = []string{testPrevSecret, "", "whsec_a"} },
		"subscribers[0].previous_secrets[1]: must not be empty",
		"subscribers[0].previous_secrets[2]: whsec_ secret is not valid standard base64 (at byte 0 after the prefix)")
	f(func(c *Config) {
		s(c).EventTypes = []string{"order.*", "a:b/c?d-e_f", "", strings.Repeat("x", 129), "bad type", "ü"}
	},
		"subscribers[0].event_types[2]: must not be empty",
		"subscribers[0].event_types[3]: must be at most 128 characters",
		"subscribers[0].event_types[4]: may only contain A-Z, a-z, 0-9 and . _ : / - and the globs * ?",
		"subscribers[0].event_types[5]: may only contain A-Z, a-z, 0-9 and . _ : / - and the globs * ?")
	f(func(c *Config) { s(c).Batch = Batch{MaxEvents: 10_001, MaxBytes: 1 << 9, MaxWait: -1} },
		"subscribers[0].batch.max_events: must be between 1 and 10000",
		"subscribers[0].batch.max_bytes: must be between 1KiB and 64MiB",
		"subscribers[0].batch.max_wait: must be greater than 0 and at most 1h0m0s")
	f(func(c *Config) { s(c).Batch = Batch{MaxEvents: 10_000, MaxBytes: 64 << 20, MaxWait: time.Hour} })
	f(func(c *Config) {
		s(c).Headers = map[string]string{
			"Authorization": "Bearer x", "X-Env": "prod", "x-env": "dup", "HOST": "h",
			"User-Agent": "u", "Content-Length": "1", "X-Webhook-Batch": "t", "Webhook-Signature": "s",
			"": "v", "X-Nul": "a\x00b", "X-Tab": "a\tb",
		}
	},
		`subscribers[0].headers[""]: header name must be a non-empty HTTP token (letters, digits and !#$%&'*+-.^_`+"`"+`|~)`,
		"subscribers[0].headers.Content-Length: header is set by hookbatch and cannot be configured",
		"subscribers[0].headers.HOST: header is set by hookbatch and cannot be configured",
		"subscribers[0].headers.User-Agent: header is set by hookbatch and cannot be configured",
		"subscribers[0].headers.Webhook-Signature: header is set by hookbatch and cannot be configured",
		"subscribers[0].headers.X-Nul: header value must not contain control characters such as CR or LF",
		"subscribers[0].headers.X-Webhook-Batch: header is set by hookbatch and cannot be configured",
		"subscribers[0].headers.x-env: duplicate header name (names are case-insensitive)",
	)
	f(func(c *Config) { c.Subscribers = append(c.Subscribers, c.Subscribers[0], c.Subscribers[0]) },
		"subscribers[1].id: duplicate id, also used by subscribers[0]",
		"subscribers[2].id: duplicate id, also used by subscribers[0]")
}

func TestNoSecretInProblems(t *testing.T) {
	secrets := []string{"whsec_SECRETVALUE!!!", "TOKENVAL", "whsec_PREVSECRET#", "ADMINTOK", "whsec_SIGNSECRET$"}
	c := validConfig()
	c.Subscribers[0].Secret = secrets[0]
	c.Ingest.AuthTokens = []string{secrets[1]}
	c.Subscribers[0].PreviousSecrets = []string{secrets[2]}
	c.Admin.Token = secrets[3]
	c.Ingest.SigningSecret = secrets[4]
	c.Subscribers[0].Headers = map[string]string{"Authorization": "HEADERSECRET\r\n"}
	c.Subscribers[0].URL = "https://a.example/in?token=URLSECRET #"
	ps := append(c.Validate(), c.Warnings()...)
	if len(ps) < 7 {
		t.Fatalf("expected a problem for each bad secret, got %v", ps)
	}
	for _, p := range ps {
		for _, s := range append(secrets, "SECRETVALUE", "TOKENVAL", "PREVSECRET", "ADMINTOK", "SIGNSECRET", "HEADERSECRET", "URLSECRET") {
			if strings.Contains(p.String(), s) {
				t.Errorf("problem quotes secret %q: %s", s, p)
			}
		}
	}
}

func TestWarnings(t *testing.T) {
	f := func(mutate func(c *Config), want ...string) {
		t.Helper()
		c := validConfig()
		mutate(&c)
		var got []string
		for _, p := range c.Warnings() {
			got = append(got, p.String())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("unexpected warnings\ngot  %q\nwant %q", got, want)
		}
	}
	const private = "delivery to a private address will be refused at dial time unless delivery.allow_private_networks is true"

	f(func(c *Config) {})
	for _, u := range []string{"http://localhost:9090/", "http://api.localhost/", "http://127.0.0.1/", "http://[::1]:80/",
		"http://10.1.2.3/", "http://192.168.0.1/", "http://172.16.0.1/", "http://169.254.169.254/", "http://[fd00::1]/",
		"http://0.0.0.0/", "http://[::ffff:127.0.0.1]/"} {
		f(func(c *Config) { c.Subscribers[0].URL = u }, "subscribers[0].url: "+private)
		f(func(c *Config) { c.Subscribers[0].URL = u; c.Delivery.AllowPrivateNetworks = true })
	}
	for _, u := range []string{"http://8.8.8.8/", "http://[2001:db8::1]/", "http://internal.corp/"} {
		f(func(c *Config) { c.Subscribers[0].URL = u })
	}
	f(func(c *Config) { c.Listen = ":8080" },
		"listen: ingest is reachable from other hosts without authentication; set ingest.auth_tokens, ingest.signing_secret or ingest.allow_cidrs")
	f(func(c *Config) { c.Listen = ":8080"; c.Ingest.AuthTokens = []string{testToken1} })
	f(func(c *Config) { c.AdminListen = "0.0.0.0:8081" },
		"admin_listen: the admin API is reachable from other hosts without a token; set admin.token")
	f(func(c *Config) { c.AdminListen = "localhost:8081" })
	f(func(c *Config) { c.Ingest.RateLimit.Burst = 5 },
		"ingest.rate_limit.burst: has no effect while ingest.rate_limit.per_client_rps is 0")
	f(func(c *Config) { c.Storage.SyncWrites = false },
		"storage.sync_writes: is false: acknowledged events may be lost if the machine crashes")
	f(func(c *Config) { c.Subscribers = nil },
		"subscribers: none configured: every event sent to /v1/events will be refused with 422")
	f(func(c *Config) { c.Storage.MaxDiskBytes = 30 << 20 },
		"storage.max_disk_bytes: is under 256 MiB (4 value-log files of 64 MiB): the store may stay full after its backlog is delivered")
	f(func(c *Config) { c.Storage.MaxDiskBytes = 256 << 20 })
	f(func(c *Config) { c.Storage.MaxDiskBytes = 300 << 20; c.Ingest.MaxBodyBytes = 64 << 20 },
		"storage.max_disk_bytes: is under 512 MiB (4 value-log files of 128 MiB): the store may stay full after its backlog is delivered")
	f(func(c *Config) {
		c.Subscribers[0].Secret = "short"
		c.Subscribers[0].PreviousSecrets = []string{"whsec_c2hvcnQ="}
	},
		"subscribers[0].secret: signing key is shorter than 24 bytes; use a random whsec_ secret of 24 to 64 bytes",
		"subscribers[0].previous_secrets[0]: signing key is shorter than 24 bytes; use a random whsec_ secret of 24 to 64 bytes")
}

func TestRedacted(t *testing.T) {
	cert, key := writeTLSFiles(t)
	c := mustParse(t, strings.NewReplacer("CERT", cert, "KEY", key).Replace(fullConfig))
	c.Subscribers[1].URL = "https://u:URLPASSWORD@a.example/in?api_key=URLKEY&page=2"
	c.Subscribers[1].PreviousSecrets = []string{""}
	orig := mustParse(t, strings.NewReplacer("CERT", cert, "KEY", key).Replace(fullConfig))
	orig.Subscribers[1].URL = c.Subscribers[1].URL
	orig.Subscribers[1].PreviousSecrets = []string{""}

	r := c.Redacted()
	if !reflect.DeepEqual(c, orig) {
		t.Fatal("Redacted changed its receiver")
	}
	dump := strings.Join([]string{
		strings.Join(r.Ingest.AuthTokens, ","), r.Ingest.SigningSecret, r.Admin.Token,
		r.Subscribers[0].Secret, strings.Join(r.Subscribers[0].PreviousSecrets, ","),
		r.Subscribers[0].Headers["Authorization"], r.Subscribers[1].URL,
	}, "|")
	for _, s := range []string{testToken1, testToken2, testSignSecret, testAdminToken, testSecret, testPrevSecret, testPlainSec, "Bearer abc", "URLPASSWORD", "URLKEY"} {
		if strings.Contains(dump, s) {
			t.Errorf("Redacted() keeps secret %q", s)
		}
	}
	want := "REDACTED,REDACTED|REDACTED|REDACTED|REDACTED|REDACTED,REDACTED|REDACTED|https://u:REDACTED@a.example/in?api_key=REDACTED&page=2"
	if dump != want {
		t.Fatalf("Redacted() secrets:\ngot  %s\nwant %s", dump, want)
	}
	if r.Subscribers[1].Secret != "REDACTED" || !slices.Equal(r.Subscribers[1].PreviousSecrets, []string{""}) {
		t.Fatalf("unexpected redacted subscriber %+v", r.Subscribers[1])
	}
	// Everything else is kept.
	if r.Subscribers[0].Headers["X-Env"] != "prod" || r.Subscribers[0].URL != c.Subscribers[0].URL || r.Listen != c.Listen {
		t.Fatalf("Redacted() changed a value that is not secret: %+v", r)
	}

	// A user alone in a URL is often a token.
	for in, want := range map[string]string{
		"https://TOKEN123@a.example/in":   "https://REDACTED@a.example/in",
		"https://u:p@a.example/in":        "https://u:REDACTED@a.example/in",
		"https://a.example/in?page=2":     "https://a.example/in?page=2",
		"https://@a.example/in?x=1&sig=s": "https://@a.example/in?sig=REDACTED&x=1",
		// Pairs Go cannot read may hold a credential: they go.
		"https://h/in?v=1;token=SECRET": "https://h/in?REDACTED",
		"https://h/in?token=SEC%zzRET":  "https://h/in?REDACTED",
		"https://h/in?token=SECRET%":    "https://h/in?REDACTED",
		"https://h/in?a=1&token=S%zz":   "https://h/in?REDACTED",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}

	// The copy is deep: changing it leaves c alone.
	r.Subscribers[0].Headers["X-Env"] = "changed"
	r.Subscribers[0].EventTypes[0] = "changed"
	r.Ingest.AllowCIDRs[0] = "changed"
	if !reflect.DeepEqual(c, orig) {
		t.Fatal("Redacted() shares memory with its receiver")
	}

	// Empty secrets stay empty, so that "not set" still shows.
	d := Default().Redacted()
	if d.Admin.Token != "" || d.Ingest.SigningSecret != "" {
		t.Fatalf("Redacted() filled an empty secret: %+v", d)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Load(missing) error = %v, want one naming the file", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: nowhere\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Load(bad) error = %v, want one naming the file", err)
	}
	got := problemStrings(t, err)
	want := []string{"bogus: unknown key", "listen: must be host:port, such as 127.0.0.1:8080 or :8080"}
	if !slices.Equal(got, want) {
		t.Fatalf("unexpected problems\ngot  %q\nwant %q", got, want)
	}

	good := filepath.Join(dir, "good.yaml")
	t.Setenv("HOOKBATCH_TEST_DATA_DIR", dir)
	if err := os.WriteFile(good, []byte("data_dir: ${HOOKBATCH_TEST_DATA_DIR}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil || c.DataDir != dir {
		t.Fatalf("Load(good) = %q, %v; want data_dir %q", c.DataDir, err, dir)
	}
}

func TestProblemAndError(t *testing.T) {
	p := Problem{Path: "subscribers[2].url", Msg: "is required"}
	if got := p.String(); got != "subscribers[2].url: is required" {
		t.Fatalf("Problem.String() = %q", got)
	}
	e := &Error{Problems: []Problem{p, {Path: "(root)", Msg: "must be a mapping"}}}
	if got := e.Error(); got != "subscribers[2].url: is required\n(root): must be a mapping" {
		t.Fatalf("Error.Error() = %q", got)
	}
}

func TestFieldsUseYAMLNamesAndHideSecrets(t *testing.T) {
	c := Default()
	c.Admin.Token = "admin-token-0123456789"
	c.Subscribers = []Subscriber{{ID: "a", URL: "http://h/x", Secret: "whsec_c2VjcmV0c2VjcmV0", Batch: DefaultBatch}}
	f := c.Fields()
	if f["shutdown_timeout"] != "30s" || f["listen"] != "127.0.0.1:8080" {
		t.Fatalf("fields %v", f)
	}
	b, _ := json.Marshal(f)
	s := string(b)
	if strings.Contains(s, "admin-token-0123456789") || strings.Contains(s, "c2VjcmV0c2VjcmV0") {
		t.Fatalf("a secret shows in %s", s)
	}
}
