package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// ingestBody is a JSON array of n events with data of about size bytes.
func ingestBody(n, size int) []byte {
	data := `"` + strings.Repeat("x", max(size-2, 0)) + `"`
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"type":"order.created","data":%s}`, data)
	}
	if n == 1 {
		return []byte(parts[0])
	}
	return []byte("[" + strings.Join(parts, ",") + "]")
}

// ingestCtx is a request context carrying body, as fasthttp hands it to the
// handler.
func ingestCtx(body []byte) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/events")
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBody(body)
	return ctx
}

// quietRelay is a relay whose subscriber never receives anything (its
// delivery loop is not started), to measure ingest alone.
func quietRelay(tb testing.TB) *Relay {
	tb.Helper()
	cfg := testConfig(tb, sub("a", "http://127.0.0.1:1/hooks", 100, time.Hour))
	r, err := New(cfg, testLogger(tb), "bench")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.store.Close() })
	return r
}

// TestIngestAllocationsPerEvent pins the allocations of the ingest hot path,
// real storage included. Of the ~50 per event of a 100-event request, about
// 46 are Badger's (an event writes three keys and looks one up: per key a
// versioned copy, a pending-write entry, a CRC writer for the log, arena
// nodes); the relay's own are its record and key buffers, shared by the
// request.
func TestIngestAllocationsPerEvent(t *testing.T) {
	r := quietRelay(t)
	for _, n := range []int{1, 100} {
		body := ingestBody(n, 300)
		ctx := ingestCtx(body)
		r.handleIngest(ctx) // warm the pools
		allocs := testing.AllocsPerRun(50, func() {
			ctx.Response.Reset()
			r.handleIngest(ctx)
			if ctx.Response.StatusCode() != fasthttp.StatusAccepted {
				t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		})
		perEvent := allocs / float64(n)
		t.Logf("%d-event request: %.0f allocations, %.1f per event", n, allocs, perEvent)
		if n == 100 && perEvent > 52 {
			t.Fatalf("%.1f allocations per event in a 100-event request, want at most 52", perEvent)
		}
	}
}

func BenchmarkIngest(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			r := quietRelay(b)
			body := ingestBody(n, 300)
			ctx := ingestCtx(body)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				ctx.Response.Reset()
				r.handleIngest(ctx)
			}
		})
	}
}
