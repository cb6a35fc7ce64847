package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Client calls the REST API of nodes on behalf of a team, signed.
type Client struct {
	signer *Signer
	http   *http.Client
	stats  *Metrics // nil: failures not counted
}

// NewClient returns a client signing with signer.
func NewClient(signer *Signer) *Client {
	return &Client{signer: signer, http: &http.Client{Transport: NodeTransport()}}
}

// SetMetrics makes failed calls to nodes counted.
func (c *Client) SetMetrics(m *Metrics) { c.stats = m }

// NodeTransport is the connection pool to nodes: kept-alive connections
// (every SDK call and proxied request goes through one), no transparent
// compression (bodies pass through as the client sent them).
func NodeTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // nodes are reached directly, never through HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // streams (commands, PTY) answer when they answer
		DisableCompression:    true,
	}
}

// maxErrorBody caps what is read of a node's error answer.
const maxErrorBody = 64 << 10

// Do sends method path (with body as JSON when not nil) to node (its
// name) at base, signed for that node and team, and decodes a 2xx answer into out (when not
// nil). A node's error answer becomes the errdefs category of its status
// with the node's message; a node that cannot be reached is
// errdefs.ErrUnavailable (nothing was sent: another node may be tried).
func (c *Client) Do(ctx context.Context, node, base, team, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return 0, fmt.Errorf("node request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.signer.Sign(req, node, team); err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.stats.forwardError(node)
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return 0, errdefs.Unavailable("node %s is not reachable: %v", base, op.Err)
		}
		// The request may have reached the node: not retryable elsewhere.
		return 0, fmt.Errorf("node %s: %s %s: %w", base, method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode >= 500 {
			c.stats.forwardError(node)
		}
		return resp.StatusCode, nodeError(base, resp)
	}
	if out != nil {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("node %s: %s %s: decode the answer: %w", base, method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// nodeError turns a node's error answer into the same category here, so
// the api replica answers the client as the node would have.
func nodeError(base string, resp *http.Response) error {
	var b errdefs.Body
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(raw, &b) != nil || b.Message == "" {
		b.Message = strings.TrimSpace(string(raw))
	}
	msg := b.Message
	switch resp.StatusCode {
	case http.StatusBadRequest:
		return errdefs.Invalid("%s", msg)
	case http.StatusUnauthorized:
		// The api replica's own signature was refused: an operator
		// problem (secrets or clocks differ), not the client's.
		return errdefs.Unavailable("node %s refused this api replica's cluster signature: %s", base, msg)
	case http.StatusForbidden:
		return errdefs.Denied("%s", msg)
	case http.StatusNotFound:
		return errdefs.NotFound("%s", msg)
	case http.StatusConflict:
		return errdefs.Conflict("%s", msg)
	case http.StatusPreconditionFailed:
		return errdefs.Precondition("%s", msg)
	case http.StatusTooManyRequests:
		return errdefs.Exhausted("%s", msg)
	case http.StatusRequestEntityTooLarge:
		return errdefs.TooLarge("%s", msg)
	case http.StatusServiceUnavailable:
		return errdefs.Unavailable("%s", msg)
	case http.StatusGatewayTimeout:
		return fmt.Errorf("node %s: %s: %w", base, msg, errdefs.ErrDeadlineExceeded)
	}
	return fmt.Errorf("node %s answered %d: %s", base, resp.StatusCode, msg)
}
