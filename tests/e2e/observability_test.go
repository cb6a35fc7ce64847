package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sbxdev/sbx/sdk"
)

// otlpReceiver is an OTLP/HTTP trace endpoint: OTLP is a protocol sbx does
// not own, so the test decodes what the server exports with the
// protocol's own protobuf messages and keeps every span.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf on /v1/traces", http.StatusUnsupportedMediaType)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var msg collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// waitSpan returns the first span that ok accepts, waiting for the
// server's exporter (it sends every 2 s).
func (r *otlpReceiver) waitSpan(t *testing.T, what string, ok func(*tracepb.Span) bool) *tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		for _, s := range r.spans {
			if ok(s) {
				r.mu.Unlock()
				return s
			}
		}
		n := len(r.spans)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %s among the %d spans exported", what, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// children are the names of the spans whose parent is p.
func (r *otlpReceiver) children(p *tracepb.Span) map[string]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*tracepb.Span{}
	for _, s := range r.spans {
		if string(s.ParentSpanId) == string(p.SpanId) && string(s.TraceId) == string(p.TraceId) {
			out[s.Name] = s
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			switch v := kv.Value.Value.(type) {
			case *commonpb.AnyValue_StringValue:
				return v.StringValue
			case *commonpb.AnyValue_BoolValue:
				return strconv.FormatBool(v.BoolValue)
			case *commonpb.AnyValue_IntValue:
				return strconv.FormatInt(v.IntValue, 10)
			}
		}
	}
	return ""
}

// TestObservability runs one server with tracing on and checks, on real
// requests: request IDs in headers and log lines (API, errors, proxy), the
// span tree of a cold and a pooled create and of a proxied request, W3C
// trace context taken from the client, and the Prometheus series.
func TestObservability(t *testing.T) {
	otlp := newOTLPReceiver(t)
	srv := StartServer(t, "--otlp-endpoint", otlp.srv.URL)
	c := srv.Client(t)
	with := func(h map[string]string) map[string]string {
		out := map[string]string{"X-API-Key": srv.APIKey}
		for k, v := range h {
			out[k] = v
		}
		return out
	}

	// Request IDs: a sane one is kept, a bad one replaced, one made when absent.
	if r := srv.Raw(t, "GET", "/sandboxes", "", with(map[string]string{"X-Request-Id": "obs-list-1"})); r.Status != 200 || r.Header.Get("X-Request-Id") != "obs-list-1" {
		t.Fatalf("GET /sandboxes: %d, X-Request-Id %q; want 200 and the client's ID", r.Status, r.Header.Get("X-Request-Id"))
	}
	if got := srv.Raw(t, "GET", "/sandboxes", "", with(map[string]string{"X-Request-Id": "bad id\"with quotes"})).Header.Get("X-Request-Id"); got == "" || strings.ContainsAny(got, " \"") {
		t.Errorf("a malformed X-Request-Id came back as %q; want a fresh ID", got)
	}
	if got := srv.Raw(t, "GET", "/health", "", nil).Header.Get("X-Request-Id"); len(got) < 16 {
		t.Errorf("no request ID made for a request without one: %q", got)
	}
	// An error: its ID, route and error in the access log, and the W3C
	// trace context the client sent continued by the server's span.
	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if r := srv.Raw(t, "GET", "/sandboxes/nosuchsandbox0", "", with(map[string]string{"X-Request-Id": "obs-err-1",
		"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"})); r.Status != 404 {
		t.Fatalf("GET a missing sandbox: %d %s", r.Status, r.Body)
	}

	// A cold create (no internet: never from the pool) and a pooled one.
	no := false
	cold := create(t, c, sdk.CreateOptions{AllowInternetAccess: &no})
	warm := create(t, c, sdk.CreateOptions{})
	// A proxied request to the sandbox's agent. (Not a command: the SDK
	// keeps a command's stream open after its end, so the request would
	// end, and be logged, only when the client lets go of it.)
	if r := srv.Raw(t, "GET", "/health", "", map[string]string{"E2b-Sandbox-Id": cold.ID, "E2b-Sandbox-Port": "49983",
		"X-Request-Id": "obs-proxy-1"}); r.Header.Get("X-Request-Id") != "obs-proxy-1" {
		t.Errorf("proxied request: X-Request-Id %q", r.Header.Get("X-Request-Id"))
	}
	if r := srv.Raw(t, "GET", "/health", "", map[string]string{"E2b-Sandbox-Id": "nosuchsandbox0", "E2b-Sandbox-Port": "49983",
		"X-Request-Id": "obs-proxy-gone"}); r.Status != http.StatusBadGateway {
		t.Errorf("proxied request to a missing sandbox: %d", r.Status)
	}
	if _, err := c.Create(opCtx(t), sdk.CreateOptions{Template: "nosuchtemplate"}); err == nil {
		t.Fatal("create from a missing template succeeded")
	}

	t.Run("access log", func(t *testing.T) {
		log := srv.Log()
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`msg="http request".*route="GET /sandboxes" .*status=200.*request\.id=obs-list-1`),
			regexp.MustCompile(`msg="http request".*route="GET /sandboxes/\{id\}".*status=404.*err=.*request\.id=obs-err-1 trace\.id=` + clientTrace),
			regexp.MustCompile(`msg="http request".*route=proxy .*status=204.*request\.id=obs-proxy-1`),
			regexp.MustCompile(`msg="http request".*route=proxy .*status=502.*err="no such sandbox running".*request\.id=obs-proxy-gone`),
			regexp.MustCompile(`msg="sandbox created".*sandbox\.id=` + cold.ID + `.*request\.id=\S+ trace\.id=`),
		} {
			if !want.MatchString(log) {
				t.Errorf("no log line matches %s", want)
			}
		}
	})

	t.Run("spans", func(t *testing.T) {
		errSpan := otlp.waitSpan(t, "span of the failed GET", func(s *tracepb.Span) bool { return s.Name == "GET /sandboxes/{id}" })
		if hex.EncodeToString(errSpan.TraceId) != clientTrace || hex.EncodeToString(errSpan.ParentSpanId) != clientSpan {
			t.Errorf("the server span did not continue the client's traceparent: trace %x parent %x", errSpan.TraceId, errSpan.ParentSpanId)
		}
		if attr(errSpan, "http.response.status_code") != "404" || attr(errSpan, "request.id") != "obs-err-1" {
			t.Errorf("GET span attributes: %v", errSpan.Attributes)
		}
		createOf := func(id string) *tracepb.Span {
			return otlp.waitSpan(t, "sandbox.create of "+id, func(s *tracepb.Span) bool {
				return s.Name == "sandbox.create" && attr(s, "sandbox.id") == id
			})
		}
		for _, tc := range []struct {
			sb   *sdk.Sandbox
			want []string
		}{
			{cold, []string{"sandbox.admission", "sandbox.network", "sandbox.runtime", "sandbox.envd", "sandbox.store"}},
			{warm, []string{"sandbox.admission", "sandbox.pool_claim", "sandbox.store"}},
		} {
			cs := createOf(tc.sb.ID)
			kids := otlp.children(cs)
			for _, name := range tc.want {
				if kids[name] == nil {
					t.Errorf("create of %s: no child span %s; children: %v", tc.sb.ID, name, keys(kids))
				}
			}
			parent := otlp.waitSpan(t, "the HTTP span of a create", func(s *tracepb.Span) bool {
				return string(s.SpanId) == string(cs.ParentSpanId)
			})
			if parent.Name != "POST /v2/sandboxes" || parent.Kind != tracepb.Span_SPAN_KIND_SERVER || attr(parent, "http.response.status_code") != "201" {
				t.Errorf("create span's parent: %s kind %v attrs %v; want the server span of POST /v2/sandboxes answering 201", parent.Name, parent.Kind, parent.Attributes)
			}
		}
		if p := otlp.children(createOf(warm.ID))["sandbox.pool_claim"]; p != nil && attr(p, "pool.hit") != attr(createOf(warm.ID), "sandbox.pooled") {
			t.Errorf("pool_claim says hit=%s, create says pooled=%s", attr(p, "pool.hit"), attr(createOf(warm.ID), "sandbox.pooled"))
		}
		fwd := otlp.waitSpan(t, "proxy.forward of GET /health", func(s *tracepb.Span) bool {
			return s.Name == "proxy.forward" && attr(s, "sandbox.id") == cold.ID
		})
		if p := otlp.waitSpan(t, "parent of proxy.forward", func(s *tracepb.Span) bool { return string(s.SpanId) == string(fwd.ParentSpanId) }); p.Name != "proxy" || attr(p, "request.id") != "obs-proxy-1" {
			t.Errorf("proxy.forward's parent is %q (request.id %q), want the server span named proxy of obs-proxy-1", p.Name, attr(p, "request.id"))
		}
	})

	t.Run("metrics", func(t *testing.T) {
		body := srv.Raw(t, "GET", "/metrics", "", map[string]string{"X-API-Key": srv.AdminKey(t)}).Body
		for _, want := range []string{
			`sbx_http_request_duration_seconds_count{code="201",route="POST /v2/sandboxes"} 2`,
			`sbx_http_request_duration_seconds_count{code="404",route="GET /sandboxes/{id}"} 1`,
			`sbx_http_request_duration_seconds_count{code="200",route="GET /sandboxes"} 2`,
			`sbx_sandbox_create_failures_total{reason="not_found"} 1`,
			`sbx_sandbox_create_failures_total{reason="resource_exhausted"} 0`,
			`sbx_cluster_webhook_queue_depth 0`,
			`sbx_sandbox_create_duration_seconds_count{team=`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
		if !regexp.MustCompile(`sbx_http_request_duration_seconds_count\{code="204",route="proxy"\} 1`).MatchString(body) {
			t.Errorf("/metrics counts no proxied request")
		}
		// One create could use the pool (the cold one may not): exactly one
		// hit or miss, from series that existed at 0 since the pool started.
		claims := 0
		series := regexp.MustCompile(`sbx_pool_claims_total\{result="(?:hit|miss)",team="",template="base"\} (\d+)`).FindAllStringSubmatch(body, -1)
		for _, m := range series {
			n, _ := strconv.Atoi(m[1])
			claims += n
		}
		if claims != 1 || len(series) != 2 {
			t.Errorf("pool claims of base: %d in %d series, want 1 (hits + misses) in 2 (hit and miss, one still at 0)\n%s", claims, len(series), grepLines(body, "sbx_pool_claims_total"))
		}
	})
}

func keys(m map[string]*tracepb.Span) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
