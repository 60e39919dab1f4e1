package relay

import (
	"strconv"

	"github.com/hookbatch/hookbatch/event"
	"github.com/valyala/fasthttp"
)

// httpError is an error that carries the HTTP status it is answered with.
type httpError struct {
	status     int
	msg        string
	retryAfter int // seconds; 0: no Retry-After header
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, msg string) *httpError { return &httpError{status: status, msg: msg} }

// writeError writes every error response: JSON {"error": "..."}.
func writeError(ctx *fasthttp.RequestCtx, e *httpError) {
	ctx.Response.Reset()
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	if e.retryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if e.status == fasthttp.StatusMethodNotAllowed {
		ctx.Response.Header.Set("Allow", "POST")
	}
	b := make([]byte, 0, len(e.msg)+16)
	b = append(b, `{"error":`...)
	b = event.AppendString(b, []byte(e.msg))
	ctx.SetBody(append(b, "}\n"...))
}
