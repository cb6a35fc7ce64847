package errdefs

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
)

// HTTPStatus maps an error's category to an HTTP status code. This is the
// only place in sbx where that mapping is decided.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalidArgument):
		return http.StatusBadRequest
	case errors.Is(err, ErrAlreadyExists), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrFailedPrecondition):
		return http.StatusPreconditionFailed
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrPermissionDenied):
		return http.StatusForbidden
	case errors.Is(err, ErrResourceExhausted):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrDeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// Message is the client-safe text of err: the Message of the outermost
// *Error, or a generic text for uncategorised (internal) errors.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	if HTTPStatus(err) == http.StatusInternalServerError {
		return "internal error; see the sbx server log for details"
	}
	var p publicMessager
	if errors.As(err, &p) {
		return p.PublicMessage()
	}
	var h hinter
	if errors.As(err, &h) && h.Hint() != "" {
		// A categorised error that says what to do about it (a
		// placement's NoFitError: "start at least one node ...").
		return err.Error() + ": " + h.Hint()
	}
	return err.Error()
}

// publicMessager is an error whose text holds operator detail (node
// names, addresses) and that says what a client may see instead.
type publicMessager interface{ PublicMessage() string }

// hinter is an error that says what the caller can do about it.
type hinter interface{ Hint() string }

// Body is the JSON error body E2B clients read: {"code": <status>, "message": ...}.
type Body struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// WriteHTTP writes err as an E2B-style JSON error response. Internal detail is
// logged (when log is not nil), never sent to the client.
// Behind the access-log middleware (internal/telemetry), the error also
// goes into the request's access log line, and the log line written here
// carries the request's ID.
func WriteHTTP(w http.ResponseWriter, log *slog.Logger, err error) {
	status := HTTPStatus(err)
	ctx := context.Background()
	if f, ok := w.(failedRequest); ok {
		ctx = f.RequestFailed(err)
	}
	if log != nil {
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelError
		}
		log.Log(ctx, level, "request failed", "status", status, "err", err)
	}
	WriteStatus(w, status, Message(err))
}

// failedRequest is a ResponseWriter that notes the error its request was
// answered with and returns the request's context, for logging.
type failedRequest interface {
	RequestFailed(err error) context.Context
}

// WriteStatus writes a JSON error body with an explicit status.
func WriteStatus(w http.ResponseWriter, status int, message string) {
	WriteJSON(w, status, Body{Code: status, Message: message})
}

// WriteJSON writes v as a JSON response with status. It lives here, next
// to the error responses, so that every REST handler answers the same way
// whether it succeeds or fails.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
