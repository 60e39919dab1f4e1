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
	retryAfter int    // seconds; 0: no Retry-After header
	allow      string // the Allow header of a 405
}

// notAllowed is the 405 for a path that takes only method m.
func notAllowed(m string) *httpError {
	return &httpError{status: fasthttp.StatusMethodNotAllowed, msg: "method not allowed: use " + m, allow: m}
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
	switch e.status {
	case fasthttp.StatusMethodNotAllowed:
		ctx.Response.Header.Set("Allow", e.allow)
	case fasthttp.StatusUnauthorized:
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="hookbatch"`)
	}
	ctx.SetBody(appendErrorBody(make([]byte, 0, len(e.msg)+16), e.msg))
}

// appendErrorBody appends the body of every error answer: {"error": msg}.
func appendErrorBody(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = event.AppendString(dst, []byte(msg))
	return append(dst, "}\n"...)
}
