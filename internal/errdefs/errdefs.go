// Package errdefs holds the small set of error categories every sbx package
// uses, and the one function that turns them into HTTP responses.
//
// Wrap a category with context: fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound),
// or use the helpers (NotFound, Invalid, ...) which keep a user-facing message.
package errdefs

import (
	"errors"
	"fmt"
)

// The categories. Check them with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrConflict           = errors.New("conflict")
	ErrUnavailable        = errors.New("unavailable")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	// ErrTooLarge is a request body larger than the operation takes: unlike
	// ErrResourceExhausted (429) a retry cannot help, only a smaller body.
	ErrTooLarge = errors.New("too large")
)

// Error is a categorised error whose Message is safe to show to a client.
type Error struct {
	Kind    error  // one of the categories above
	Message string // what was wrong and, where possible, what to do
	Cause   error  // internal detail, logged, never sent to the client
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

// Is makes errors.Is(err, ErrNotFound) work for an *Error of that kind.
func (e *Error) Is(target error) bool { return e.Kind == target }

// Unwrap exposes the cause for errors.Is/As on internal errors.
func (e *Error) Unwrap() error { return e.Cause }

func newf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// NotFound returns a not-found error with a client-safe message.
func NotFound(format string, args ...any) error { return newf(ErrNotFound, format, args...) }

// Invalid returns an invalid-argument error with a client-safe message.
func Invalid(format string, args ...any) error { return newf(ErrInvalidArgument, format, args...) }

// Conflict returns a conflict error (e.g. "already paused").
func Conflict(format string, args ...any) error { return newf(ErrConflict, format, args...) }

// Exists returns an already-exists error.
func Exists(format string, args ...any) error { return newf(ErrAlreadyExists, format, args...) }

// Precondition returns a failed-precondition error.
func Precondition(format string, args ...any) error {
	return newf(ErrFailedPrecondition, format, args...)
}

// Unavailable returns an unavailable error (temporary; retry later).
func Unavailable(format string, args ...any) error { return newf(ErrUnavailable, format, args...) }

// Unauthenticated returns an authentication error.
func Unauthenticated(format string, args ...any) error {
	return newf(ErrUnauthenticated, format, args...)
}

// Denied returns a permission error: the caller is known but may not do this.
func Denied(format string, args ...any) error { return newf(ErrPermissionDenied, format, args...) }

// Exhausted returns a resource-exhausted error (limits, budgets: HTTP 429).
func Exhausted(format string, args ...any) error { return newf(ErrResourceExhausted, format, args...) }

// TooLarge returns a request-too-large error (HTTP 413); say the limit.
func TooLarge(format string, args ...any) error { return newf(ErrTooLarge, format, args...) }

// Wrap attaches a client-safe message and a category to an internal error.
func Wrap(kind, cause error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...), Cause: cause}
}
