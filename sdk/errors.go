package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// APIError is a non-2xx HTTP answer from the control plane or from a
// sandbox's plain-HTTP endpoints (/files, /health), whose bodies are
// {"code": <status>, "message": "..."}.
type APIError struct {
	Status  int    // HTTP status code
	Code    int    // "code" from the body; equals Status on sbx and E2B
	Message string // "message" from the body, or the raw body if it was not JSON
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Sentinel errors: every *APIError and *RPCError matches the one for its
// HTTP status or Connect code with errors.Is, so callers need not know
// which protocol answered:
//
//	if errors.Is(err, sdk.ErrNotFound) { ... }
var (
	ErrNotFound        = errors.New("not found")                         // 404, not_found
	ErrUnauthorized    = errors.New("unauthorized")                      // 401, unauthenticated
	ErrForbidden       = errors.New("forbidden")                         // 403, permission_denied
	ErrConflict        = errors.New("conflict")                          // 409, already_exists
	ErrInvalidArgument = errors.New("invalid argument")                  // 400, invalid_argument
	ErrRateLimited     = errors.New("rate limited or over a limit")      // 429, resource_exhausted
	ErrUnavailable     = errors.New("unavailable; retry later")          // 503, unavailable
	ErrTimeout         = errors.New("timed out")                         // 504, deadline_exceeded, and the SDK's own timeouts
	ErrPrecondition    = errors.New("not possible in the current state") // 412, failed_precondition
)

// sentinels maps HTTP statuses and Connect codes to the sentinel errors.
var (
	statusSentinels = map[int]error{
		http.StatusNotFound: ErrNotFound, http.StatusUnauthorized: ErrUnauthorized,
		http.StatusForbidden: ErrForbidden, http.StatusConflict: ErrConflict,
		http.StatusBadRequest: ErrInvalidArgument, http.StatusTooManyRequests: ErrRateLimited,
		http.StatusServiceUnavailable: ErrUnavailable, http.StatusGatewayTimeout: ErrTimeout,
		http.StatusRequestTimeout: ErrTimeout, http.StatusPreconditionFailed: ErrPrecondition,
	}
	codeSentinels = map[string]error{
		"not_found": ErrNotFound, "unauthenticated": ErrUnauthorized, "permission_denied": ErrForbidden,
		"already_exists": ErrConflict, "invalid_argument": ErrInvalidArgument, "resource_exhausted": ErrRateLimited,
		"unavailable": ErrUnavailable, "deadline_exceeded": ErrTimeout, "failed_precondition": ErrPrecondition,
	}
)

// Is makes errors.Is(err, ErrNotFound) (and the other sentinels) work.
func (e *APIError) Is(target error) bool {
	return statusSentinels[e.Status] == target || (e.Code != e.Status && statusSentinels[e.Code] == target)
}

// Is makes errors.Is(err, ErrNotFound) (and the other sentinels) work.
func (e *RPCError) Is(target error) bool { return codeSentinels[e.Code] == target }

// RPCError is an error from a Connect RPC to envd, e.g. Code "not_found".
type RPCError struct {
	Code    string // Connect code name: not_found, invalid_argument, ...
	Message string
	Status  int // HTTP status of the response, 200 for errors at the end of a stream
}

func (e *RPCError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// ErrSandboxNotRunning is wrapped by data-plane errors when the sandbox is
// gone: killed, timed out or paused (the proxy answers 502, or a stream was
// cut and the sandbox no longer answers /health).
var ErrSandboxNotRunning = errors.New("sandbox is not running (killed, paused or reached its end of life)")

// IsNotFound reports whether err means a missing sandbox, template, file or
// process (HTTP 404 or Connect not_found).
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound, "not_found") }

// IsUnauthorized reports whether err is an authentication failure (401 or
// Connect unauthenticated): a wrong API key, access token or user.
func IsUnauthorized(err error) bool {
	return hasStatus(err, http.StatusUnauthorized, "unauthenticated")
}

// IsConflict reports a 409 (e.g. pausing an already paused sandbox) or
// Connect already_exists.
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict, "already_exists") }

// IsInvalidArgument reports a 400 or Connect invalid_argument.
func IsInvalidArgument(err error) bool {
	return hasStatus(err, http.StatusBadRequest, "invalid_argument")
}

// IsRateLimited reports a 429 or Connect resource_exhausted.
func IsRateLimited(err error) bool {
	return hasStatus(err, http.StatusTooManyRequests, "resource_exhausted")
}

// IsSandboxNotRunning reports whether err happened because the sandbox is
// gone (see ErrSandboxNotRunning).
func IsSandboxNotRunning(err error) bool { return errors.Is(err, ErrSandboxNotRunning) }

func hasStatus(err error, status int, rpcCode string) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == status || ae.Code == status
	}
	var re *RPCError
	if errors.As(err, &re) {
		return re.Code == rpcCode
	}
	return false
}

// apiErrorFrom reads an error body. E2B's JS SDK reads "code" from the body,
// so servers always send one; we still fall back to the HTTP status.
func apiErrorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode, Code: resp.StatusCode}
	var body struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil && (body.Message != "" || body.Code != nil) {
		e.Message = body.Message
		var n int
		if json.Unmarshal(body.Code, &n) == nil && n != 0 {
			e.Code = n
		}
	} else {
		e.Message = strings.TrimSpace(string(data))
	}
	return e
}

// dataPlaneError turns a non-2xx answer on the sandbox URL into an error; a
// 502 means the proxy could not reach the sandbox.
func dataPlaneError(resp *http.Response) error {
	err := apiErrorFrom(resp)
	if resp.StatusCode == http.StatusBadGateway {
		var ae *APIError
		if errors.As(err, &ae) && strings.Contains(ae.Message, "port is not open") {
			return err // the sandbox runs; only that port is closed
		}
		return fmt.Errorf("%w: %w", ErrSandboxNotRunning, err)
	}
	return err
}

// connectCodeFromHTTP maps an HTTP status to a Connect code, as the Connect
// protocol specifies for responses that carry no Connect error body.
func connectCodeFromHTTP(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "internal"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "permission_denied"
	case http.StatusNotFound:
		return "unimplemented"
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "unavailable"
	default:
		return "unknown"
	}
}
