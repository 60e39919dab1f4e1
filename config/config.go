// Package config holds hookbatch's configuration: the YAML schema of
// DESIGN §4, its defaults, loading with ${ENV} expansion, and validation that
// names the YAML path of every problem.
package config

import "time"

// Config is the whole configuration file. Field tags are the contract's key
// names; unknown keys are rejected at load.
type Config struct {
	Listen          string        `yaml:"listen"`
	AdminListen     string        `yaml:"admin_listen"`
	DataDir         string        `yaml:"data_dir"`
	LogLevel        string        `yaml:"log_level"`
	LogFormat       string        `yaml:"log_format"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	TLS             TLS           `yaml:"tls"`
	Ingest          Ingest        `yaml:"ingest"`
	Storage         Storage       `yaml:"storage"`
	Delivery        Delivery      `yaml:"delivery"`
	Admin           Admin         `yaml:"admin"`
	Subscribers     []Subscriber  `yaml:"subscribers"`
}

// TLS enables TLS on the ingest listener when both files are set.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Ingest configures the producer-facing listener.
type Ingest struct {
	MaxBodyBytes        ByteSize      `yaml:"max_body_bytes"`
	MaxEventsPerRequest int           `yaml:"max_events_per_request"`
	DedupWindow         time.Duration `yaml:"dedup_window"`
	AuthTokens          []string      `yaml:"auth_tokens"`
	SigningSecret       string        `yaml:"signing_secret"`
	AllowCIDRs          []string      `yaml:"allow_cidrs"`
	RateLimit           RateLimit     `yaml:"rate_limit"`
}

// RateLimit is a per-client-address token bucket; zero means off.
type RateLimit struct {
	PerClientRPS float64 `yaml:"per_client_rps"`
	Burst        int     `yaml:"burst"`
}

// Storage configures the Badger store.
type Storage struct {
	SyncWrites   bool     `yaml:"sync_writes"`
	MaxDiskBytes ByteSize `yaml:"max_disk_bytes"`
}

// Delivery configures the outbound pools.
type Delivery struct {
	Concurrency          int            `yaml:"concurrency"`
	PerHostConcurrency   int            `yaml:"per_host_concurrency"`
	Timeout              time.Duration  `yaml:"timeout"`
	UserAgent            string         `yaml:"user_agent"`
	AllowPrivateNetworks bool           `yaml:"allow_private_networks"`
	Retry                Retry          `yaml:"retry"`
	CircuitBreaker       CircuitBreaker `yaml:"circuit_breaker"`
}

// Retry is the retry policy of DESIGN §6.
type Retry struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	Multiplier     float64       `yaml:"multiplier"`
	Jitter         float64       `yaml:"jitter"`
	MaxAttempts    int           `yaml:"max_attempts"`
	MaxAge         time.Duration `yaml:"max_age"`
}

// CircuitBreaker is the per-host breaker of DESIGN §6.
type CircuitBreaker struct {
	FailureThreshold int           `yaml:"failure_threshold"`
	OpenDuration     time.Duration `yaml:"open_duration"`
}

// Admin configures the admin API.
type Admin struct {
	Token string `yaml:"token"`
}

// Subscriber is one destination of batched webhooks.
type Subscriber struct {
	ID              string            `yaml:"id"`
	URL             string            `yaml:"url"`
	Secret          string            `yaml:"secret"`
	PreviousSecrets []string          `yaml:"previous_secrets"`
	EventTypes      []string          `yaml:"event_types"`
	Batch           Batch             `yaml:"batch"`
	Ordered         bool              `yaml:"ordered"`
	Headers         map[string]string `yaml:"headers"`
}

// Batch holds a subscriber's flush triggers.
type Batch struct {
	MaxEvents int           `yaml:"max_events"`
	MaxBytes  ByteSize      `yaml:"max_bytes"`
	MaxWait   time.Duration `yaml:"max_wait"`
}

// ByteSize is a size in bytes; YAML accepts an integer or a string such as
// "64KiB", "1MiB", "10GiB" (also KB/MB/GB as powers of ten).
type ByteSize int64

// DefaultBatch is the batch block a subscriber gets for keys it leaves out.
var DefaultBatch = Batch{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: time.Second}

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		AdminListen:     "127.0.0.1:8081",
		DataDir:         "./data",
		LogLevel:        "info",
		LogFormat:       "json",
		ShutdownTimeout: 30 * time.Second,
		Ingest: Ingest{
			MaxBodyBytes:        1 << 20,
			MaxEventsPerRequest: 1000,
			DedupWindow:         24 * time.Hour,
		},
		Storage: Storage{SyncWrites: true},
		Delivery: Delivery{
			Concurrency:        256,
			PerHostConcurrency: 32,
			Timeout:            10 * time.Second,
			Retry: Retry{
				InitialBackoff: time.Second,
				MaxBackoff:     5 * time.Minute,
				Multiplier:     2,
				Jitter:         0.2,
				MaxAttempts:    12,
				MaxAge:         24 * time.Hour,
			},
			CircuitBreaker: CircuitBreaker{FailureThreshold: 5, OpenDuration: 30 * time.Second},
		},
	}
}
