package telemetry

import (
	"bufio"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries a request's ID: taken from the client when it
// sends a sane one (so a caller's ID follows its request through sbx),
// made up otherwise, and always returned in the response.
const RequestIDHeader = "X-Request-Id"

// RequestIDKey is the log attribute of a request's ID.
const RequestIDKey = "request.id"

// maxRequestIDLen bounds a client's ID: it lands in every log line of its
// request.
const maxRequestIDLen = 128

// info is what the layers of one request tell the middleware about it.
// Handlers downstream receive a copy of the *http.Request (WithContext),
// so what they learn goes through this pointer in the context.
type info struct {
	id    string
	route string // the matched pattern ("POST /sandboxes"), "proxy", or "" = unmatched
	err   error  // the error answered, for the access log
}

type infoKey struct{}

func infoFrom(ctx context.Context) *info {
	i, _ := ctx.Value(infoKey{}).(*info)
	return i
}

// RequestID returns the ID of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	if i := infoFrom(ctx); i != nil {
		return i.id
	}
	return ""
}

// SetRoute names the route a request matched: a mux pattern, or a fixed
// word for traffic that is not routed by pattern ("proxy"). Route labels
// metrics and names spans, so it must come from a bounded set: never a
// path.
func SetRoute(ctx context.Context, route string) {
	if i := infoFrom(ctx); i != nil {
		i.route = route
	}
}

// SetError records the error a request was answered with, for its access
// log line (errdefs.WriteHTTP calls it).
func SetError(ctx context.Context, err error) {
	if i := infoFrom(ctx); i != nil {
		i.err = err
	}
}

// Observer records one finished request (internal/metrics).
type Observer interface {
	ObserveHTTP(route string, code int, d time.Duration)
}

// Middleware gives every request an ID, a log line when it ends, a span
// when tracing is on, and an observation for the metrics.
type Middleware struct {
	Log      *slog.Logger
	Tracing  *Tracing // nil or off: no spans and no trace propagation
	Observer Observer // nil: none
	// Quiet routes log at debug: health checks and scrapes come every few
	// seconds and would drown the lines that matter.
	Quiet map[string]bool
}

// Wrap returns next behind the middleware.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	tracer := m.Tracing.tracer()
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		in := &info{id: requestID(r.Header.Get(RequestIDHeader))}
		w.Header().Set(RequestIDHeader, in.id)
		ctx := context.WithValue(r.Context(), infoKey{}, in)
		var span trace.Span
		if tracer != nil {
			ctx = prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
			ctx, span = tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.URLPath(r.URL.Path),
					attribute.String(RequestIDKey, in.id)))
		}
		rw := &recorder{ResponseWriter: w, ctx: ctx, info: in}
		next.ServeHTTP(rw, r.WithContext(ctx))
		d := time.Since(start)
		route := in.route
		if route == "" {
			route = "unmatched"
		}
		code := rw.status()
		if span != nil {
			span.SetName(route)
			span.SetAttributes(semconv.HTTPRoute(route), semconv.HTTPResponseStatusCode(code))
			if code >= 500 {
				span.SetStatus(codes.Error, http.StatusText(code))
			}
			span.End()
		}
		if m.Observer != nil {
			m.Observer.ObserveHTTP(route, code, d)
		}
		level := slog.LevelInfo
		if m.Quiet[route] && code < 400 {
			level = slog.LevelDebug
		}
		if !m.Log.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("route", route), slog.String("path", r.URL.Path),
			slog.Int("status", code), slog.Int64("bytes", rw.bytes), slog.Duration("elapsed", d.Round(time.Microsecond)),
			slog.String("remote", r.RemoteAddr)}
		if in.err != nil {
			attrs = append(attrs, slog.String("err", in.err.Error()))
		}
		m.Log.LogAttrs(ctx, level, "http request", attrs...)
	})
}

// requestID keeps a client's ID when it is short and made of characters
// safe in logs and headers (letters, digits, - _ . : /), else makes one.
func requestID(h string) string {
	if len(h) > 0 && len(h) <= maxRequestIDLen {
		ok := true
		for i := 0; i < len(h) && ok; i++ {
			c := h[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '-' || c == '_' || c == '.' || c == ':' || c == '/'
		}
		if ok {
			return h
		}
	}
	return rand.Text()
}

// recorder notes a response's status and size. It passes Flush and Hijack
// through (event streams, WebSockets through the proxy) and unwraps for
// http.ResponseController.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
	// The request's context, for RequestFailed: errdefs.WriteHTTP gets
	// the writer, not the request, and logs with it.
	ctx  context.Context
	info *info
}

// RequestFailed notes the error the request is answered with (its access
// log line shows it) and returns the request's context.
func (r *recorder) RequestFailed(err error) context.Context {
	r.info.err = err
	return r.ctx
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

func (r *recorder) Flush() {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.code == 0 {
		r.code = http.StatusSwitchingProtocols
	}
	return c, rw, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
