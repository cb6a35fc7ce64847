package periodic

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// records keeps what a logger was told.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			err = a.Value.String()
		}
		return true
	})
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message+": "+err)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func TestRun(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		steps []error // what each step returns; the last one's step ends ctx
		want  []string
	}{
		{"quiet steps log nothing", []error{nil, nil, nil}, nil},
		{"a failed step is logged and the chore goes on", []error{boom, nil, boom, nil}, []string{"WARN chore: boom", "WARN chore: boom"}},
		{"a failure as ctx ends is no news", []error{nil, boom}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rec := &records{}
			calls := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				Run(ctx, time.Millisecond, func(context.Context) error {
					err := tc.steps[calls]
					if calls++; calls == len(tc.steps) {
						cancel()
					}
					return err
				}, slog.New(rec), "chore")
			}()
			<-done
			if calls != len(tc.steps) {
				t.Errorf("%d steps ran, want %d", calls, len(tc.steps))
			}
			if len(rec.msgs) != len(tc.want) {
				t.Fatalf("logged %q, want %q", rec.msgs, tc.want)
			}
			for i := range tc.want {
				if rec.msgs[i] != tc.want[i] {
					t.Errorf("log %d = %q, want %q", i, rec.msgs[i], tc.want[i])
				}
			}
		})
	}
}

// A chore whose context has already ended returns without a step.
func TestRunEnded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	Run(ctx, time.Hour, func(context.Context) error { t.Error("step ran"); return nil }, slog.New(slog.DiscardHandler), "chore")
}
