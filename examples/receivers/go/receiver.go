// Command receiver is an example subscriber of hookbatch: it verifies each
// delivered batch with the official Standard Webhooks library, de-duplicates
// by batch id and hands every new batch to a processing function once.
//
// hookbatch delivers at least once (DESIGN §2): a batch whose 2xx answer was
// lost (timeout, crash, connection reset) is sent again with the same
// batch_id, so a receiver must answer a repeat with 2xx without applying it a
// second time. This example remembers processed ids in memory for a window;
// a real receiver records them in the same transaction as the batch's
// effects, so that the memory survives restarts.
//
// Answers, and what hookbatch does with them (DESIGN §6):
//
//	200  processed now, or a duplicate of a processed batch: delivered
//	401  signature missing, wrong or too old: permanent (dead-letter store)
//	400  verified but not a well-formed batch: permanent
//	413  body larger than the limit: hookbatch splits the batch in half
//	500  processing failed: hookbatch retries with backoff
//
// Run it:
//
//	WEBHOOK_SECRET=whsec_... go run ./examples/receivers/go -listen 127.0.0.1:9090
package main

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// SecretEnv names the environment variable holding the subscriber's secret,
// exactly as written in hookbatch's config (subscribers[].secret).
const SecretEnv = "WEBHOOK_SECRET"

// Batch is the delivered body of DESIGN §6.
type Batch struct {
	Batch      bool    `json:"batch"`
	BatchID    string  `json:"batch_id"`
	Subscriber string  `json:"subscriber"`
	Count      int     `json:"count"`
	Events     []Event `json:"events"`

	// Attempt is the X-Webhook-Attempt header (1 for the first delivery).
	Attempt int `json:"-"`
}

// Event is one event of a batch. Data holds the producer's JSON byte for
// byte.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// ProcessFunc applies a verified batch seen for the first time. An error
// makes the receiver answer 500, so hookbatch retries the batch later; the
// batch is then not remembered as processed.
type ProcessFunc func(ctx context.Context, b *Batch) error

// Options configure a Receiver; zero fields take the defaults shown.
type Options struct {
	// Secret is the subscriber's secret as written in hookbatch's config.
	// Required.
	Secret string
	// Process is called once per new batch. Required.
	Process ProcessFunc
	// DedupWindow is how long processed batch ids are remembered (24h,
	// hookbatch's default delivery.retry.max_age).
	DedupWindow time.Duration
	// DedupMax caps the ids remembered; the oldest are forgotten first
	// (1,000,000).
	DedupMax int
	// MaxBodyBytes limits a delivery's body (8 MiB); larger ones get 413,
	// which makes hookbatch split the batch.
	MaxBodyBytes int64
	// Logger receives one line per batch and per refusal (slog.Default()).
	Logger *slog.Logger
}

// Receiver is an http.Handler for hookbatch deliveries. Safe for concurrent
// use.
type Receiver struct {
	wh      *standardwebhooks.Webhook
	process ProcessFunc
	maxBody int64
	log     *slog.Logger
	seen    *dedup
}

// NewWebhook returns the Standard Webhooks verifier for a hookbatch secret.
// hookbatch takes the key of a "whsec_" secret from its base64 part and uses
// any other secret's own bytes as the key (DESIGN §6), while
// standardwebhooks.NewWebhook base64-decodes every secret: a secret without
// the prefix needs NewWebhookRaw.
func NewWebhook(secret string) (*standardwebhooks.Webhook, error) {
	if strings.HasPrefix(secret, "whsec_") {
		return standardwebhooks.NewWebhook(secret)
	}
	return standardwebhooks.NewWebhookRaw([]byte(secret))
}

// NewReceiver returns a Receiver for opts.
func NewReceiver(opts Options) (*Receiver, error) {
	if opts.Secret == "" {
		return nil, errors.New("receiver: empty secret")
	}
	if opts.Process == nil {
		return nil, errors.New("receiver: no Process function")
	}
	wh, err := NewWebhook(opts.Secret)
	if err != nil {
		// The library's error may quote the decoder's input; say only what
		// is wrong, never the secret.
		return nil, errors.New("receiver: the secret is not whsec_<standard base64> (or is empty)")
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = 24 * time.Hour
	}
	if opts.DedupMax <= 0 {
		opts.DedupMax = 1_000_000
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Receiver{
		wh:      wh,
		process: opts.Process,
		maxBody: opts.MaxBodyBytes,
		log:     opts.Logger,
		seen:    newDedup(opts.DedupWindow, opts.DedupMax, time.Now),
	}, nil
}

// ServeHTTP answers one delivery.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		rc.fail(w, r, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, err := readBody(w, r, rc.maxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			rc.fail(w, r, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(rc.maxBody, 10)+" bytes")
			return
		}
		rc.fail(w, r, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}

	// Verify the raw bytes before looking inside them.
	if err := rc.wh.Verify(body, r.Header); err != nil {
		rc.fail(w, r, http.StatusUnauthorized, "signature: "+err.Error())
		return
	}

	var b Batch
	if err := json.Unmarshal(body, &b); err != nil {
		rc.fail(w, r, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	// webhook-id and the body are signed; X-Webhook-Batch-Id is not, but
	// hookbatch sets all three to the batch id.
	switch {
	case !b.Batch || b.BatchID == "":
		rc.fail(w, r, http.StatusBadRequest, `body: not a batch ("batch": true and "batch_id" required)`)
		return
	case b.Count != len(b.Events):
		rc.fail(w, r, http.StatusBadRequest, fmt.Sprintf(`body: "count" is %d but "events" holds %d`, b.Count, len(b.Events)))
		return
	case r.Header.Get("webhook-id") != b.BatchID:
		rc.fail(w, r, http.StatusBadRequest, `webhook-id differs from "batch_id"`)
		return
	case r.Header.Get("X-Webhook-Batch-Id") != "" && r.Header.Get("X-Webhook-Batch-Id") != b.BatchID:
		rc.fail(w, r, http.StatusBadRequest, `X-Webhook-Batch-Id differs from "batch_id"`)
		return
	}
	b.Attempt, _ = strconv.Atoi(r.Header.Get("X-Webhook-Attempt"))

	first, err := rc.seen.begin(r.Context(), b.BatchID)
	if err != nil {
		// The client went away while another delivery of this batch was
		// being processed; nothing was done for this one.
		rc.fail(w, r, http.StatusServiceUnavailable, "gave up waiting for a concurrent delivery of this batch")
		return
	}
	if !first {
		rc.log.Info("duplicate batch", "batch_id", b.BatchID, "attempt", b.Attempt, "count", b.Count)
		writeResult(w, b.Count, true)
		return
	}
	if err := rc.callProcess(r.Context(), &b); err != nil {
		rc.seen.end(b.BatchID, false)
		rc.fail(w, r, http.StatusInternalServerError, "processing failed: "+err.Error())
		return
	}
	rc.seen.end(b.BatchID, true)
	rc.log.Info("batch", "batch_id", b.BatchID, "attempt", b.Attempt, "count", b.Count, "subscriber", b.Subscriber)
	writeResult(w, b.Count, false)
}

// callProcess runs the ProcessFunc, turning a panic into an error so that
// the batch id is let go of (and the batch retried) rather than held forever.
func (rc *Receiver) callProcess(ctx context.Context, b *Batch) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return rc.process(ctx, b)
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

func (rc *Receiver) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	rc.log.Warn("refused delivery", "status", status, "error", msg,
		"batch_id", r.Header.Get("X-Webhook-Batch-Id"), "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeResult(w http.ResponseWriter, count int, duplicate bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(struct {
		Received  int  `json:"received"`
		Duplicate bool `json:"duplicate"`
	}{count, duplicate})
}

// dedup remembers processed batch ids for a window, at most max of them,
// and makes concurrent deliveries of one batch wait for each other, so that
// a batch is processed once even when hookbatch retries it (after a timeout)
// while the first delivery is still being processed.
type dedup struct {
	mu      sync.Mutex
	entries map[string]*dedupEntry
	done    *list.List // of *dedupEntry, processed ones, oldest first
	window  time.Duration
	max     int
	now     func() time.Time
}

type dedupEntry struct {
	id        string
	finished  chan struct{} // closed when processing ends
	processed bool          // set before finished is closed
	at        time.Time
	elem      *list.Element
}

func newDedup(window time.Duration, max int, now func() time.Time) *dedup {
	return &dedup{entries: make(map[string]*dedupEntry), done: list.New(), window: window, max: max, now: now}
}

// begin reports whether the caller is to process batch id (true: it must
// call end) or the batch was processed already (false). While another
// delivery of id is being processed it waits for that one's outcome.
func (d *dedup) begin(ctx context.Context, id string) (bool, error) {
	for {
		d.mu.Lock()
		d.expireLocked()
		e, ok := d.entries[id]
		if !ok {
			d.entries[id] = &dedupEntry{id: id, finished: make(chan struct{})}
			d.mu.Unlock()
			return true, nil
		}
		d.mu.Unlock()
		select {
		case <-e.finished:
			if e.processed {
				return false, nil
			}
			// That delivery failed and let go of the id: try to take it.
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// end records the outcome of processing id after begin returned true.
func (d *dedup) end(id string, processed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[id]
	if processed {
		e.processed, e.at = true, d.now()
		e.elem = d.done.PushBack(e)
		d.expireLocked()
	} else {
		delete(d.entries, id)
	}
	close(e.finished)
}

func (d *dedup) expireLocked() {
	now := d.now()
	for f := d.done.Front(); f != nil; f = d.done.Front() {
		e := f.Value.(*dedupEntry)
		if d.done.Len() <= d.max && now.Sub(e.at) < d.window {
			return
		}
		d.done.Remove(f)
		delete(d.entries, e.id)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9090", "address to listen on (host:port)")
	window := flag.Duration("dedup-window", 24*time.Hour, "how long processed batch ids are remembered")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	rc, err := NewReceiver(Options{
		Secret:      os.Getenv(SecretEnv),
		DedupWindow: *window,
		Logger:      log,
		Process: func(_ context.Context, b *Batch) error {
			for _, e := range b.Events {
				log.Info("event", "batch_id", b.BatchID, "id", e.ID, "type", e.Type, "data_bytes", len(e.Data))
			}
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "receiver: %v (set %s to the subscriber's secret)\n", err, SecretEnv)
		os.Exit(2)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/", rc)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("listening", "addr", *listen)
	select {
	case err := <-errc:
		log.Error("serve", "error", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown", "error", err)
		os.Exit(1)
	}
}
