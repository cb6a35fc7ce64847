// Package connect implements the subset of the Connect RPC protocol that
// E2B's envd speaks: the JSON codec over HTTP/1.1, unary calls and server
// streams. It is hand-written so envd stays a small static binary without
// protobuf code generation; message types are plain Go structs whose JSON
// tags follow the ProtoJSON mapping.
package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Code is a Connect error code, spelled as on the wire.
type Code string

// The Connect codes envd uses.
const (
	Canceled           Code = "canceled"
	Unknown            Code = "unknown"
	InvalidArgument    Code = "invalid_argument"
	DeadlineExceeded   Code = "deadline_exceeded"
	NotFound           Code = "not_found"
	AlreadyExists      Code = "already_exists"
	PermissionDenied   Code = "permission_denied"
	ResourceExhausted  Code = "resource_exhausted"
	FailedPrecondition Code = "failed_precondition"
	Aborted            Code = "aborted"
	Unimplemented      Code = "unimplemented"
	Internal           Code = "internal"
	Unavailable        Code = "unavailable"
	Unauthenticated    Code = "unauthenticated"
)

// HTTPStatus is the status Connect assigns to a code for unary errors
// (connectrpc.com/docs/protocol#error-codes).
func (c Code) HTTPStatus() int {
	switch c {
	case Canceled:
		return 499
	case InvalidArgument, FailedPrecondition:
		return http.StatusBadRequest
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case NotFound, Unimplemented:
		return http.StatusNotFound
	case AlreadyExists, Aborted:
		return http.StatusConflict
	case PermissionDenied:
		return http.StatusForbidden
	case ResourceExhausted:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case Unauthenticated:
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// Error is an error with a Connect code; its message is shown to clients.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message,omitempty"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// asError converts any handler error to a wire error. Errors that carry no
// code become "internal" (their text is still useful to the SDK user, who
// owns the sandbox, so it is not hidden).
func asError(err error) *Error {
	var ce *Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: DeadlineExceeded, Message: "the operation timed out"}
	case errors.Is(err, context.Canceled):
		return &Error{Code: Canceled, Message: "the operation was canceled"}
	default:
		return &Error{Code: Internal, Message: err.Error()}
	}
}

// maxMessage bounds request messages; envd requests are small JSON objects.
const maxMessage = 16 << 20

// Timeout returns the Connect-Timeout-Ms of r; 0 means none.
func Timeout(r *http.Request) (time.Duration, error) {
	v := r.Header.Get("Connect-Timeout-Ms")
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 || len(v) > 10 {
		return 0, Errorf(InvalidArgument, "Connect-Timeout-Ms %q is not a positive number of milliseconds", v)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// KeepaliveInterval returns the Keepalive-Ping-Interval header in seconds,
// or def when absent or invalid.
func KeepaliveInterval(r *http.Request, def time.Duration) time.Duration {
	s, err := strconv.Atoi(r.Header.Get("Keepalive-Ping-Interval"))
	if err != nil || s <= 0 {
		return def
	}
	return time.Duration(s) * time.Second
}

// decode unmarshals a request message, ignoring unknown fields as ProtoJSON
// parsers in the SDKs expect. An empty body is the empty message.
func decode(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return Errorf(InvalidArgument, "request is not valid JSON for this method: %v", err)
	}
	return nil
}

// Unary serves a unary method with a JSON request and response.
func Unary[Req, Resp any](fn func(ctx context.Context, r *http.Request, req *Req) (*Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeUnaryError(w, Errorf(Unimplemented, "method %s is not allowed, use POST", r.Method))
			return
		}
		if ct := mediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			unsupportedMediaType(w, ct, "application/json")
			return
		}
		ctx, cancel, err := withTimeout(r)
		if err != nil {
			writeUnaryError(w, err)
			return
		}
		defer cancel()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxMessage+1))
		if err != nil {
			writeUnaryError(w, Errorf(Canceled, "read request: %v", err))
			return
		}
		if len(body) > maxMessage {
			writeUnaryError(w, Errorf(ResourceExhausted, "request larger than %d bytes", maxMessage))
			return
		}
		var req Req
		if err := decode(body, &req); err != nil {
			writeUnaryError(w, err)
			return
		}
		resp, err := fn(ctx, r, &req)
		if err != nil {
			writeUnaryError(w, err)
			return
		}
		out, err := json.Marshal(resp)
		if err != nil {
			writeUnaryError(w, fmt.Errorf("encode response: %w", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
	})
}

func withTimeout(r *http.Request) (context.Context, context.CancelFunc, error) {
	d, err := Timeout(r)
	if err != nil {
		return nil, nil, err
	}
	if d == 0 {
		ctx, cancel := context.WithCancel(r.Context())
		return ctx, cancel, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

func writeUnaryError(w http.ResponseWriter, err error) {
	ce := asError(err)
	out, _ := json.Marshal(ce)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ce.Code.HTTPStatus())
	_, _ = w.Write(out)
}

// unsupportedMediaType is the Connect protocol's answer to a codec the
// server does not speak: HTTP 415, not a Connect error.
func unsupportedMediaType(w http.ResponseWriter, got, want string) {
	w.Header().Set("Accept-Post", want)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnsupportedMediaType)
	_, _ = io.WriteString(w, "unsupported content type "+strconv.Quote(got)+"; envd speaks the Connect JSON codec: "+want+"\n")
}

func mediaType(ct string) string {
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' {
			ct = ct[:i]
			break
		}
	}
	for len(ct) > 0 && ct[len(ct)-1] == ' ' {
		ct = ct[:len(ct)-1]
	}
	return ct
}
