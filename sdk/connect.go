package sdk

// A minimal client for the Connect protocol with the JSON codec, which is
// what envd speaks (https://connectrpc.com/docs/protocol). Hand-written so
// the SDK needs no code generation and no dependencies:
//
//   - unary: POST <base>/<service>/<Method>, Content-Type application/json,
//     plain JSON request and response; errors are non-200 answers with
//     {"code":"not_found","message":"..."}.
//   - server streaming: Content-Type application/connect+json; request and
//     response bodies are envelopes [flags:1][length:4, big endian][JSON].
//     The last response envelope has flag 0x02 and carries
//     {"error":{...},"metadata":{...}} or {}.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	envelopeCompressed = 0x01
	envelopeEndStream  = 0x02

	// DefaultMaxMessageBytes bounds one message read from envd (a stream
	// envelope or a unary response) unless Config.MaxMessageBytes says
	// otherwise, so a broken or hostile peer cannot make the client
	// allocate what it announces. envd's messages are small: process
	// output comes in chunks of 32 KiB; a deep ListDir is the largest.
	DefaultMaxMessageBytes = 32 << 20
)

// ErrMessageTooLarge is wrapped by the error of a read that met a message
// over the client's limit (Config.MaxMessageBytes). The peer broke the
// protocol or is hostile: retrying does not help.
var ErrMessageTooLarge = errors.New("message from envd exceeds the size limit")

// encodeEnvelope frames one message for a streaming request or response.
func encodeEnvelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:5], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

// readEnvelope reads one envelope of at most max bytes; the length is
// checked before anything is allocated. It returns io.EOF only at a clean
// boundary before any byte of a new envelope; a truncated envelope is
// io.ErrUnexpectedEOF.
func readEnvelope(r io.Reader, max int) (flags byte, msg []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	if uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("%w: a Connect envelope announces %d bytes, the limit is %d", ErrMessageTooLarge, n, max)
	}
	msg = make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], msg, nil
}

// connectError is the JSON form of a Connect error.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// endStream is the payload of the final envelope of a stream.
type endStream struct {
	Error *connectError `json:"error"`
}

// parseEndStream turns the end-of-stream message into nil (success) or an
// *RPCError.
func parseEndStream(msg []byte) error {
	var end endStream
	if len(bytes.TrimSpace(msg)) > 0 {
		if err := json.Unmarshal(msg, &end); err != nil {
			return fmt.Errorf("invalid connect end-of-stream message %q: %w", msg, err)
		}
	}
	if end.Error != nil {
		return &RPCError{Code: end.Error.Code, Message: end.Error.Message, Status: http.StatusOK}
	}
	return nil
}

// rpcErrorFrom reads a non-200 Connect response. The body is a Connect error
// when envd answers; the proxy (502) and auth middleware (401) answer
// {"code": <int>, "message": ...} instead, so the HTTP status decides then.
func rpcErrorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ce connectError
	if json.Unmarshal(data, &ce) == nil && ce.Code != "" {
		return &RPCError{Code: ce.Code, Message: ce.Message, Status: resp.StatusCode}
	}
	// Not a Connect body: rebuild the response for the plain-HTTP mapping,
	// which also recognises the proxy's "sandbox was not found" 502.
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return dataPlaneError(resp)
}

// callOptions are per-call settings of an RPC.
type callOptions struct {
	user    string        // Linux user, sent as Basic auth; "" = envd's default
	timeout time.Duration // Connect-Timeout-Ms; 0 = none
	stream  bool
}

// newRequest builds a request to a port of this sandbox through the
// sandbox URL, with the routing and access-token headers every data-plane
// request needs. path is absolute ("/files"); query may be empty.
func (s *Sandbox) newRequest(ctx context.Context, method string, port int, path, query string, body io.Reader) (*http.Request, error) {
	u := *s.client.sandboxURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("E2b-Sandbox-Id", s.ID)
	req.Header.Set("E2b-Sandbox-Port", strconv.Itoa(port))
	if s.EnvdAccessToken != "" {
		req.Header.Set("X-Access-Token", s.EnvdAccessToken)
	}
	return req, nil
}

func (s *Sandbox) newRPCRequest(ctx context.Context, procedure string, msg any, o callOptions) (*http.Request, error) {
	payload, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", procedure, err)
	}
	ctype := "application/json"
	if o.stream {
		payload = encodeEnvelope(0, payload)
		ctype = "application/connect+json"
	}
	req, err := s.newRequest(ctx, http.MethodPost, EnvdPort, "/"+procedure, "", bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", procedure, err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Connect-Protocol-Version", "1")
	if o.timeout > 0 {
		req.Header.Set("Connect-Timeout-Ms", strconv.FormatInt(o.timeout.Milliseconds(), 10))
	}
	if o.user != "" {
		req.Header.Set("Authorization", basicUser(o.user))
	}
	if o.stream {
		// Ask envd for keepalives often enough that idle streams survive
		// proxies with idle timeouts; same value as the E2B SDKs.
		req.Header.Set("Keepalive-Ping-Interval", "50")
	}
	return req, nil
}

// basicUser selects the Linux user the way envd expects: Basic auth with
// the user name and an empty password.
func basicUser(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// unary calls a unary RPC, e.g. "filesystem.Filesystem/Stat".
func (s *Sandbox) unary(ctx context.Context, procedure string, in, out any, o callOptions) error {
	req, err := s.newRPCRequest(ctx, procedure, in, o)
	if err != nil {
		return err
	}
	resp, err := s.client.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", procedure, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", procedure, rpcErrorFrom(resp))
	}
	data, err := readLimited(resp.Body, s.client.maxMessage)
	if err != nil {
		return fmt.Errorf("%s: read response: %w", procedure, err)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decode response: %w", procedure, err)
	}
	return nil
}

// readLimited reads a whole response body of at most max bytes.
func readLimited(r io.Reader, max int) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > max {
		return nil, fmt.Errorf("%w: the response is longer than %d bytes", ErrMessageTooLarge, max)
	}
	return data, nil
}

// serverStream is the response side of a server-streaming RPC.
type serverStream struct {
	procedure string
	body      io.ReadCloser
	r         io.Reader // buffered body
	max       int       // bytes per envelope
	done      bool
}

// openStream starts a server-streaming RPC and checks the response headers.
func (s *Sandbox) openStream(ctx context.Context, procedure string, in any, o callOptions) (*serverStream, error) {
	o.stream = true
	req, err := s.newRPCRequest(ctx, procedure, in, o)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", procedure, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("%s: %w", procedure, rpcErrorFrom(resp))
	}
	return &serverStream{procedure: procedure, body: resp.Body, r: bufio.NewReader(resp.Body), max: s.client.maxMessage}, nil
}

// next returns the next message. At the end of the stream it returns
// io.EOF, or the *RPCError the server ended the stream with. A connection
// that ends without the end-of-stream envelope is io.ErrUnexpectedEOF (or
// the transport's error).
func (st *serverStream) next() (json.RawMessage, error) {
	if st.done {
		return nil, io.EOF
	}
	flags, msg, err := readEnvelope(st.r, st.max)
	if err != nil {
		st.done = true
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // EOF without end-of-stream
		}
		return nil, err
	}
	if flags&envelopeCompressed != 0 {
		st.done = true
		return nil, fmt.Errorf("%s: compressed envelope received, but no compression was negotiated", st.procedure)
	}
	if flags&envelopeEndStream != 0 {
		st.done = true
		if err := parseEndStream(msg); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	return msg, nil
}

func (st *serverStream) Close() error { return st.body.Close() }

// streamBroken decides what a stream that broke off means: if the sandbox no
// longer answers /health, it was killed (the E2B SDKs do the same check).
func (s *Sandbox) streamBroken(err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if running, herr := s.IsRunning(ctx); herr == nil && !running {
		return fmt.Errorf("%w: %w", ErrSandboxNotRunning, err)
	}
	return err
}

// IsRunning reports whether the sandbox answers through the proxy: true on
// a 2xx from envd's /health, false when the proxy answers 502.
func (s *Sandbox) IsRunning(ctx context.Context) (bool, error) {
	req, err := s.newRequest(ctx, http.MethodGet, EnvdPort, "/health", "", nil)
	if err != nil {
		return false, err
	}
	resp, err := s.client.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("health of sandbox %s: %w", s.ID, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // /health has no body to speak of
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return true, nil
	case resp.StatusCode == http.StatusBadGateway:
		return false, nil
	default:
		return false, fmt.Errorf("health of sandbox %s: unexpected status %s", s.ID, resp.Status)
	}
}
