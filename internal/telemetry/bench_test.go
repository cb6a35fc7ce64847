package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type nopObserver struct{}

func (nopObserver) ObserveHTTP(string, int, time.Duration) {}

// BenchmarkMiddleware measures what the middleware adds to one request
// with tracing off, as the server runs it (access log at info to a
// discarding JSON handler, an observer), against the bare handler; and a
// create path's five child spans with no recording parent.
func BenchmarkMiddleware(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r.Context(), "POST /v2/sandboxes")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"sandboxID":"x"}`)
	})
	log := slog.New(LogHandler(slog.NewJSONHandler(io.Discard, nil)))
	wrapped := (&Middleware{Log: log, Observer: nopObserver{}}).Wrap(h)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", h}, {"middleware", wrapped}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("POST", "/v2/sandboxes", nil)
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
	b.Run("spans-off", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			for range 5 {
				_, span := Start(ctx, "sandbox.step")
				End(span, nil)
			}
		}
	})
}
