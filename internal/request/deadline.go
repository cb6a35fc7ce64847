package request

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Request body deadlines. http.Server's ReadTimeout cannot be used: it
// bounds the whole request, which would cut long-lived traffic (the SSE
// event stream, command streams and uploads through the sandbox proxy)
// and still let a slow body hold a connection for all of it. Instead each
// body gets a read deadline that moves with its progress:
//
//   - Grace: any body may take this long, whatever its rate.
//   - MinRate: after that, the body must have arrived at this average
//     rate since the request started (a 100 MB upload at 1 MB/s is fine,
//     a byte every few seconds is not).
//   - Idle: and no single read may wait longer than this, so a body
//     that sent a lot fast cannot then stall for hours on its credit.
//
// Requests without a body (GET, SSE, WebSocket upgrades) get no deadline:
// their headers are bounded by the server's ReadHeaderTimeout, and once a
// body has been read to its end the deadline is cleared, so responses can
// stream for as long as they like.
type Deadlines struct {
	Grace   time.Duration
	MinRate int64 // bytes per second
	Idle    time.Duration
}

// DefaultDeadlines are sbx serve's.
var DefaultDeadlines = Deadlines{Grace: 10 * time.Second, MinRate: 1 << 10, Idle: 30 * time.Second}

// tooSlowError is a body cut by its deadline.
type tooSlowError struct {
	dl   Deadlines
	n    int64
	took time.Duration
	err  error
}

func (e *tooSlowError) Error() string {
	return fmt.Sprintf("request body arrived too slowly (%d bytes in %v): send it at %s/s or faster, with no pause over %v (the first %v are free)",
		e.n, e.took.Round(time.Millisecond), size(e.dl.MinRate), e.dl.Idle, e.dl.Grace)
}

func (e *tooSlowError) Unwrap() error { return e.err }

// BodyDeadline enforces the body deadlines dl on every request with a body.
func BodyDeadline(dl Deadlines, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		d := &deadlineBody{dl: dl, body: r.Body, rc: http.NewResponseController(w), start: time.Now()}
		// Armed now, not at the first Read: a handler that never reads the
		// body, and the server draining it after the handler, are bounded too.
		if err := d.arm(d.start); err != nil {
			// Not a connection that can take deadlines (tests'
			// recorders): serve without.
			next.ServeHTTP(w, r)
			return
		}
		r.Body = d
		next.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	dl    Deadlines
	body  io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	n     int64
	done  bool
}

// arm sets the read deadline for the next read, at now.
func (d *deadlineBody) arm(now time.Time) error {
	deadline := d.start.Add(d.dl.Grace + time.Duration(d.n)*(time.Second/time.Duration(d.dl.MinRate)))
	if idle := now.Add(d.dl.Idle); idle.Before(deadline) {
		deadline = idle
	}
	return d.rc.SetReadDeadline(deadline)
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	if d.done {
		return d.body.Read(p)
	}
	_ = d.arm(time.Now())
	n, err := d.body.Read(p)
	d.n += int64(n)
	switch {
	case err == io.EOF:
		d.done = true
		_ = d.rc.SetReadDeadline(time.Time{}) // the response may stream on
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &tooSlowError{dl: d.dl, n: d.n, took: time.Since(d.start), err: err}
	}
	return n, err
}

func (d *deadlineBody) Close() error { return d.body.Close() }
