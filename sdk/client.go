// Package sdk is a Go client for sbx and other servers that speak E2B's wire
// protocol: the control-plane REST API (create, list, kill sandboxes) and the
// data plane of each sandbox (commands and files through envd, the agent
// inside the sandbox).
//
// It depends only on the standard library so it can become its own module.
//
// A typical session:
//
//	c, err := sdk.NewClient(sdk.ConfigFromEnv())
//	sbx, err := c.Create(ctx, sdk.CreateOptions{Template: "base"})
//	defer sbx.Kill(context.WithoutCancel(ctx))
//	res, err := sbx.Commands.Run(ctx, "echo hello", sdk.RunOptions{})
//	fmt.Print(res.Stdout)
//
// Beyond commands and files, as in E2B's JS SDK: Sandbox.Pty (terminals),
// Files.Watch, Sandbox.Host and NewPortRequest, signed Files.DownloadURL and
// UploadURL, the code interpreter (RunCode), template builds
// (BuildTemplate), events (ListEvents, StreamEvents) and webhooks. Every
// error from the server matches a sentinel with errors.Is: ErrNotFound,
// ErrUnauthorized, ErrTimeout, ErrInvalidArgument, ...
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultURL is where a local `sbx serve` listens by default; it serves both
// the control plane and the sandbox traffic proxy.
const DefaultURL = "http://127.0.0.1:3000"

// EnvdPort is the port of envd, the agent inside every sandbox.
const EnvdPort = 49983

// Config says where the server is and how to authenticate.
type Config struct {
	// APIURL is the control-plane base URL (E2B_API_URL).
	APIURL string
	// SandboxURL is the one base URL for all sandbox traffic (E2B_SANDBOX_URL);
	// requests carry E2b-Sandbox-Id / E2b-Sandbox-Port headers. Empty means APIURL.
	SandboxURL string
	// APIKey is sent as X-API-Key on control-plane requests (E2B_API_KEY).
	APIKey string
	// HTTPClient is used for every request. Nil means a client with a
	// connection pool sized for many parallel sandboxes and no overall
	// timeout (command streams can run for a long time; use contexts).
	HTTPClient *http.Client
	// TeamID, sent as X-Team-ID, makes an sbx admin key act on that team
	// (its sandboxes, keys, budget). A team's own key needs none.
	TeamID string
	// MaxMessageBytes bounds one message read from envd or the code
	// interpreter (a stream envelope, a JSON response); a longer one
	// fails the call with ErrMessageTooLarge. 0 means
	// DefaultMaxMessageBytes. File contents (Files.Read) are not bounded.
	MaxMessageBytes int
	// Domain is the sandbox domain for Sandbox.Host when the server does
	// not name one (E2B_DOMAIN).
	Domain string
}

// ConfigFromEnv reads E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY, the same
// variables the official E2B SDKs read (`eval "$(sbx env)"` sets them).
// A missing API URL defaults to DefaultURL, a missing sandbox URL to the
// API URL.
func ConfigFromEnv() Config {
	cfg := Config{
		APIURL:     os.Getenv("E2B_API_URL"),
		SandboxURL: os.Getenv("E2B_SANDBOX_URL"),
		APIKey:     os.Getenv("E2B_API_KEY"),
		Domain:     os.Getenv("E2B_DOMAIN"),
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultURL
	}
	if cfg.SandboxURL == "" {
		// sbx serves the API and sandbox traffic on one listener.
		cfg.SandboxURL = cfg.APIURL
	}
	return cfg
}

// ErrNoAPIKey is returned by NewClient when Config.APIKey is empty.
var ErrNoAPIKey = errors.New("no API key: set E2B_API_KEY or Config.APIKey")

// Client talks to one sbx (or E2B-compatible) server. It is safe for
// concurrent use.
type Client struct {
	apiURL     *url.URL // nil for a client of one envd (NewEnvd)
	sandboxURL *url.URL
	apiKey     string
	teamID     string
	domain     string
	http       *http.Client
	maxMessage int
}

// NewClient checks cfg and returns a client. It does not contact the server.
func NewClient(cfg Config) (*Client, error) {
	if cfg.APIKey == "" {
		return nil, ErrNoAPIKey
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultURL
	}
	if cfg.SandboxURL == "" {
		cfg.SandboxURL = cfg.APIURL
	}
	apiURL, err := parseBaseURL("API URL", cfg.APIURL)
	if err != nil {
		return nil, err
	}
	sandboxURL, err := parseBaseURL("sandbox URL", cfg.SandboxURL)
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &Client{apiURL: apiURL, sandboxURL: sandboxURL, apiKey: cfg.APIKey, teamID: cfg.TeamID, domain: cfg.Domain, http: hc,
		maxMessage: maxMessage(cfg.MaxMessageBytes)}, nil
}

func maxMessage(n int) int {
	if n <= 0 {
		return DefaultMaxMessageBytes
	}
	return n
}

// EnvdConfig reaches one sandbox's envd directly, without the control
// plane: a host that runs sandboxes itself (sbx does, over envd's unix
// socket), or a test.
type EnvdConfig struct {
	// URL is envd's base URL, e.g. "http://envd" with an HTTPClient whose
	// transport dials envd's socket.
	URL string
	// HTTPClient is used for every request; nil means a default client.
	HTTPClient *http.Client
	// SandboxID and AccessToken identify the sandbox to envd (the token
	// its /init set; "" for none).
	SandboxID   string
	AccessToken string
	// MaxMessageBytes is as in Config.
	MaxMessageBytes int
}

// NewEnvd returns a sandbox handle whose Commands and Files talk to envd
// at cfg.URL. It has no control plane: Kill, SetTimeout, Info, Metrics and
// Pause return an error.
func NewEnvd(cfg EnvdConfig) (*Sandbox, error) {
	if cfg.SandboxID == "" {
		return nil, errors.New("sdk.NewEnvd: SandboxID is required")
	}
	u, err := parseBaseURL("envd URL", cfg.URL)
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	c := &Client{sandboxURL: u, http: hc, maxMessage: maxMessage(cfg.MaxMessageBytes)}
	return c.newSandbox(sandboxJSON{SandboxID: cfg.SandboxID, EnvdAccessToken: cfg.AccessToken, EnvdVersion: "unknown"})
}

// errNoControlPlane is returned by control-plane calls of a NewEnvd handle.
var errNoControlPlane = errors.New("this handle talks to envd only (sdk.NewEnvd); use a Client from NewClient for control-plane calls")

func parseBaseURL(what, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil {
		return nil, fmt.Errorf("invalid %s %q: %w", what, raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid %s %q: want an absolute http(s) URL such as %s", what, raw, DefaultURL)
	}
	return u, nil
}

func defaultHTTPClient() *http.Client {
	// Many sandboxes are created and driven in parallel against one host;
	// the stdlib default of 2 idle connections per host would make every
	// burst re-dial.
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: t}
}

// apiDo sends a control-plane request with a JSON body (nil for none) and
// decodes a JSON response into out (nil to discard). Non-2xx answers become
// *APIError. The response headers are returned for pagination.
func (c *Client) apiDo(ctx context.Context, method, path string, query url.Values, body, out any) (http.Header, error) {
	if c.apiURL == nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, errNoControlPlane)
	}
	u := *c.apiURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("X-API-Key", c.apiKey)
	if c.teamID != "" {
		req.Header.Set("X-Team-ID", c.teamID)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, apiErrorFrom(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Header, nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.Header, fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return resp.Header, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.Header, fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return resp.Header, nil
}
