package workflow

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var errOdd = errors.New("odd")

func add(n int) Step[int] {
	return Func[int](func(_ context.Context, v int) (int, error) { return v + n, nil })
}

// failUntil fails (returning its input + 1, so state flows) until the value reaches target.
func failUntil(target int) Step[int] {
	return Func[int](func(_ context.Context, v int) (int, error) {
		v++
		if v < target {
			return v, errOdd
		}
		return v, nil
	})
}

func TestChainAndRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		step    Step[int]
		want    int
		wantErr []error
		errHas  string
	}{
		{"chain in order", Chain(add(1), add(10)), 11, nil, ""},
		{"chain stops at error", Chain(add(1), failUntil(100), add(1000)), 2, []error{errOdd}, ""},
		{"retry feeds failed state forward", Retry(failUntil(3), RetryOptions{Attempts: 5}), 3, nil, ""},
		{"retry gives up", Retry(failUntil(10), RetryOptions{Attempts: 3}), 3, []error{errOdd, ErrAttemptsExhausted}, "after 3 attempts"},
		{"retry not retryable", Retry(failUntil(10), RetryOptions{Attempts: 3, Retryable: func(error) bool { return false }}), 1, []error{errOdd}, ""},
		{"named", Named("gen", failUntil(5)), 1, []error{errOdd}, "gen: odd"},
		{"generate>>retry(execute)>>validate", Chain(add(1), Retry(failUntil(4), RetryOptions{Attempts: 3}), add(100)), 104, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.step.Run(t.Context(), 0)
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
			for _, w := range tt.wantErr {
				if !errors.Is(err, w) {
					t.Errorf("err %v is not %v", err, w)
				}
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("err = %v", err)
			}
			if tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Errorf("err %v does not contain %q", err, tt.errHas)
			}
		})
	}
}

func TestParallelKeepsFirstPassing(t *testing.T) {
	t.Parallel()
	var cancelled atomic.Int32
	// Candidate 2 passes at once; the others block until cancelled.
	s := Func[int](func(ctx context.Context, v int) (int, error) {
		if Candidate(ctx) == 2 {
			return 200, nil
		}
		<-ctx.Done()
		cancelled.Add(1)
		return -1, ctx.Err()
	})
	got, err := Parallel(4, Step[int](s)).Run(t.Context(), 0)
	if err != nil || got != 200 {
		t.Fatalf("got %d, %v; want 200, nil", got, err)
	}
	if n := cancelled.Load(); n != 3 {
		t.Errorf("%d losers observed cancellation before Parallel returned, want 3", n)
	}
}

func TestParallelAllFail(t *testing.T) {
	t.Parallel()
	s := Func[int](func(ctx context.Context, v int) (int, error) { return Candidate(ctx), errOdd })
	_, err := Parallel(3, Step[int](s)).Run(t.Context(), 0)
	if !errors.Is(err, errOdd) || !strings.Contains(err.Error(), "all 3 candidates failed") {
		t.Fatalf("err = %v", err)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	slow := Func[int](func(ctx context.Context, v int) (int, error) {
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(time.Minute):
			return v + 1, nil
		}
	})
	_, err := Timeout(10*time.Millisecond, Step[int](slow)).Run(t.Context(), 0)
	if !errors.Is(err, ErrStepTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrStepTimeout and DeadlineExceeded", err)
	}
	got, err := Timeout(time.Minute, add(1)).Run(t.Context(), 0)
	if err != nil || got != 1 {
		t.Fatalf("fast step: %d, %v", got, err)
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var runs int
	s := Func[int](func(ctx context.Context, v int) (int, error) { runs++; cancel(); return v, ctx.Err() })
	_, err := Retry(Step[int](s), RetryOptions{Attempts: 5}).Run(ctx, 0)
	if !errors.Is(err, context.Canceled) || runs != 1 {
		t.Fatalf("runs %d err %v, want 1 run and context.Canceled", runs, err)
	}
}
