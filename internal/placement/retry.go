package placement

import (
	"context"
	"errors"
	"fmt"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Failure is one attempt that failed on a node.
type Failure struct {
	NodeID string
	Err    error
}

// Retryable reports whether a create that failed on a node is worth
// trying on another: the node was unavailable or out of something
// (errdefs.ErrUnavailable, ErrResourceExhausted, a deadline). Any other
// error (a bad template, a denied request) would fail anywhere.
func Retryable(err error) bool {
	return errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errdefs.ErrResourceExhausted) ||
		errors.Is(err, errdefs.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
}

// Run places req and calls create with the decision, up to attempts
// times: when create fails with a Retryable error, the node joins
// req.Exclude and the request is placed again. Each reservation is
// released when its create returns. It returns the decision create
// succeeded with; create's error when it is not retryable; and when
// placement runs out of nodes or attempts, a *NoFitError whose Failures
// list what each node said.
func (p *Placer) Run(ctx context.Context, req Request, attempts int, create func(context.Context, Decision) error) (Decision, error) {
	if attempts < 1 {
		attempts = 1
	}
	req.Exclude = append([]string(nil), req.Exclude...) // the caller's slice stays as it was
	var failures []Failure
	for range attempts {
		d, err := p.Place(ctx, req)
		if err != nil {
			var nf *NoFitError
			if errors.As(err, &nf) {
				nf.Failures = failures
			}
			return Decision{}, err
		}
		err = create(ctx, d)
		d.Reservation.Release()
		if err == nil {
			return d, nil
		}
		if !Retryable(err) || ctx.Err() != nil {
			return Decision{}, err
		}
		failures = append(failures, Failure{NodeID: d.NodeID, Err: err})
		req.Exclude = append(req.Exclude, d.NodeID)
	}
	return Decision{}, &NoFitError{Request: req, Attempts: attempts, Failures: failures}
}

func (f Failure) String() string { return fmt.Sprintf("%s: %v", f.NodeID, f.Err) }
