package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps h so every record logged with a request's context (the
// *Context methods of slog.Logger, or a logger from Logger(ctx)) carries
// that request's ID and, when tracing is on, its trace and span IDs: one
// grep of a request ID finds every line the request caused, and a trace
// ID found in a trace viewer leads back to the log.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(ctxHandler); ok {
		return h
	}
	return ctxHandler{h}
}

type ctxHandler struct{ slog.Handler }

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if info := infoFrom(ctx); info != nil {
			r.AddAttrs(slog.String(RequestIDKey, info.id))
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String("trace.id", sc.TraceID().String()), slog.String("span.id", sc.SpanID().String()))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h ctxHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return ctxHandler{h.Handler.WithAttrs(as)}
}
func (h ctxHandler) WithGroup(name string) slog.Handler { return ctxHandler{h.Handler.WithGroup(name)} }

// Logger returns log bound to ctx: its plain methods (Info, Warn...) log
// with ctx, so code that was handed a logger and a request's context logs
// the request's ID without passing ctx to every call.
func Logger(ctx context.Context, log *slog.Logger) *slog.Logger {
	if infoFrom(ctx) == nil && !trace.SpanContextFromContext(ctx).IsValid() {
		return log
	}
	return slog.New(boundHandler{log.Handler(), ctx})
}

// boundHandler logs every record with the context it was bound to when
// the caller passed none of its own (slog passes context.Background()).
type boundHandler struct {
	slog.Handler
	ctx context.Context
}

func (h boundHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil || ctx == context.Background() {
		ctx = h.ctx
	}
	return h.Handler.Handle(ctx, r)
}

func (h boundHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return boundHandler{h.Handler.WithAttrs(as), h.ctx}
}
func (h boundHandler) WithGroup(name string) slog.Handler {
	return boundHandler{h.Handler.WithGroup(name), h.ctx}
}
