// Package workflow composes small steps into pipelines: Chain runs steps in
// order, Retry re-runs a step that fails, Parallel runs N candidates and
// keeps the first that passes (best-of-N), Timeout bounds a step. It is the
// Go form of the seed's `generator >> Retry(executor) >> validator`.
//
// Steps pass a value of type T along. A failing step returns the value as
// far as it got together with the error, so Retry can hand the failed
// state (the code, its error) to the next attempt: that is how feedback
// flows in iterative refinement.
package workflow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Step transforms a value. On failure it returns the partial value and a
// non-nil error.
type Step[T any] interface {
	Run(ctx context.Context, in T) (T, error)
}

// Func adapts a function to Step.
type Func[T any] func(ctx context.Context, in T) (T, error)

// Run calls f.
func (f Func[T]) Run(ctx context.Context, in T) (T, error) { return f(ctx, in) }

// Named gives a step a name used in error messages.
func Named[T any](name string, s Step[T]) Step[T] { return named[T]{name, s} }

type named[T any] struct {
	name string
	s    Step[T]
}

func (n named[T]) Run(ctx context.Context, in T) (T, error) {
	out, err := n.s.Run(ctx, in)
	if err != nil {
		return out, fmt.Errorf("%s: %w", n.name, err)
	}
	return out, nil
}

// Chain runs steps in order, feeding each the previous output, and stops
// at the first error.
func Chain[T any](steps ...Step[T]) Step[T] {
	return Func[T](func(ctx context.Context, v T) (T, error) {
		for _, s := range steps {
			var err error
			if v, err = s.Run(ctx, v); err != nil {
				return v, err
			}
			if err := ctx.Err(); err != nil {
				return v, err
			}
		}
		return v, nil
	})
}

// ErrAttemptsExhausted is wrapped by Retry's error when every attempt failed.
var ErrAttemptsExhausted = errors.New("all attempts failed")

// RetryOptions tune Retry.
type RetryOptions struct {
	// Attempts is the total number of runs, at least 1.
	Attempts int
	// Backoff is waited between attempts (0 = none).
	Backoff time.Duration
	// Retryable says whether an error is worth another attempt; nil means
	// every error except context cancellation.
	Retryable func(error) bool
}

// Retry runs s until it succeeds or opts.Attempts runs have failed. Each
// attempt gets the previous attempt's output, so a step can see its own
// earlier failure. The error after the last attempt wraps both
// ErrAttemptsExhausted and the last attempt's error.
func Retry[T any](s Step[T], opts RetryOptions) Step[T] {
	n := max(opts.Attempts, 1)
	return Func[T](func(ctx context.Context, v T) (T, error) {
		var err error
		for i := 1; i <= n; i++ {
			if v, err = s.Run(ctx, v); err == nil {
				return v, nil
			}
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return v, err
			}
			if opts.Retryable != nil && !opts.Retryable(err) {
				return v, err
			}
			if i < n && opts.Backoff > 0 {
				select {
				case <-ctx.Done():
					return v, ctx.Err()
				case <-time.After(opts.Backoff):
				}
			}
		}
		return v, fmt.Errorf("%w after %d attempts: %w", ErrAttemptsExhausted, n, err)
	})
}

// Parallel runs n copies of s on the same input at once and returns the
// first output that succeeds, cancelling the others (best-of-N). The
// candidate's index (0..n-1) is in ctx for steps that want to vary, see
// Candidate. If all fail, it returns the last failure to finish.
func Parallel[T any](n int, s Step[T]) Step[T] {
	n = max(n, 1)
	return Func[T](func(ctx context.Context, in T) (T, error) {
		if n == 1 {
			return s.Run(context.WithValue(ctx, candidateKey{}, 0), in)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		type outcome struct {
			v   T
			err error
		}
		results := make(chan outcome, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := s.Run(context.WithValue(ctx, candidateKey{}, i), in)
				results <- outcome{v, err}
			}()
		}
		go func() { wg.Wait(); close(results) }()
		var last outcome
		for o := range results {
			if o.err == nil {
				cancel()
				// Let the losers notice the cancel before returning, so no
				// step outlives the call (they may hold sandboxes).
				for range results {
				}
				return o.v, nil
			}
			last = o
		}
		return last.v, fmt.Errorf("all %d candidates failed, last: %w", n, last.err)
	})
}

type candidateKey struct{}

// Candidate returns the index of the Parallel candidate running in ctx (0
// outside Parallel).
func Candidate(ctx context.Context) int {
	i, _ := ctx.Value(candidateKey{}).(int)
	return i
}

// ErrStepTimeout is wrapped when Timeout's bound expires.
var ErrStepTimeout = errors.New("step timed out")

// Timeout bounds s to d. The step must honour ctx; its error then wraps
// ErrStepTimeout as well as context.DeadlineExceeded.
func Timeout[T any](d time.Duration, s Step[T]) Step[T] {
	return Func[T](func(ctx context.Context, in T) (T, error) {
		tctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		v, err := s.Run(tctx, in)
		if err != nil && ctx.Err() == nil && tctx.Err() != nil {
			return v, fmt.Errorf("%w after %v: %w", ErrStepTimeout, d, err)
		}
		return v, err
	})
}
