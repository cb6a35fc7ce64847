package webhook

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
)

type api struct {
	t   *testing.T
	url string
}

func newAPI(t *testing.T, eng *Engine) *api {
	mux := http.NewServeMux()
	NewHandler(eng, testLogger(t)).Register(mux)
	srv := httptest.NewServer(eventstest.AsTeam(mux))
	t.Cleanup(srv.Close)
	return &api{t: t, url: srv.URL}
}

func (a *api) do(method, path, team, body string) (int, string) {
	a.t.Helper()
	req, _ := http.NewRequestWithContext(a.t.Context(), method, a.url+path, strings.NewReader(body))
	if team != "" {
		req.Header.Set(eventstest.TeamHeader, team)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRESTValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	a := newAPI(t, e.eng)
	long := strings.Repeat("n", MaxNameLen+1)
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{`, "not valid JSON"},
		{"wrong type", `{"name":1}`, `field "name" must be a string`},
		{"unknown field", `{"name":"x","bogus":1}`, `unknown field "bogus"`},
		{"missing fields", `{"name":"x"}`, "missing required field(s): url, events, signatureSecret"},
		{"invalid url", `{"name":"x","url":"not a url","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "is not valid: want an absolute http:// or https:// URL"},
		{"ftp url", `{"name":"x","url":"ftp://example.com/x","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "is not valid"},
		{"credentials", `{"name":"x","url":"https://u:p@example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "must not contain credentials"},
		{"private literal", `{"name":"x","url":"http://10.0.0.5/","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "private addresses are blocked"},
		{"metadata service", `{"name":"x","url":"http://169.254.169.254/latest","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "link-local"},
		{"unknown event", `{"name":"x","url":"https://example.com/","events":["sandbox.lifecycle.exploded"],"signatureSecret":"s"}`, `unknown event type "sandbox.lifecycle.exploded"`},
		{"no events", `{"name":"x","url":"https://example.com/","events":[],"signatureSecret":"s"}`, "at least one event type"},
		{"empty secret", `{"name":"x","url":"https://example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":""}`, "signatureSecret must not be empty"},
		{"bad whsec", `{"name":"x","url":"https://example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":"whsec_%%%"}`, "not standard base64"},
		{"oversized name", `{"name":"` + long + `","url":"https://example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "the limit is 128"},
		{"blank name", `{"name":"  ","url":"https://example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`, "name must not be empty"},
	}
	for _, tt := range tests {
		status, body := a.do("POST", "/events/webhooks", "a", tt.body)
		var eb struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal([]byte(body), &eb)
		if status != 400 || eb.Code != 400 || !strings.Contains(eb.Message, tt.want) {
			t.Errorf("%s: %d %s; want 400 containing %q", tt.name, status, body, tt.want)
		}
	}
	for _, q := range []string{"limit=0", "limit=101", "orderAsc=x", "start=yesterday", "deliveryStatus=lost", "eventType=nope", "cursor=%21"} {
		status, body := a.do("POST", "/events/webhooks", "a", `{"name":"ok","url":"https://example.com/","events":["sandbox.lifecycle.created"],"signatureSecret":"s"}`)
		var d Detail
		_ = json.Unmarshal([]byte(body), &d)
		if status != 201 {
			t.Fatalf("create: %d %s", status, body)
		}
		if status, body := a.do("GET", "/events/webhooks/"+d.ID+"/deliveries?"+q, "a", ""); status != 400 {
			t.Errorf("deliveries?%s: %d %s, want 400", q, status, body)
		}
	}
}

func TestRESTLifecycleAndIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, nil)
	run(t, e.eng)
	a := newAPI(t, e.eng)
	const secret = "very-secret-value"
	status, body := a.do("POST", "/events/webhooks", "team-a", `{"name":"Cost Tracking Webhook","url":"`+rc.srv.URL+`","enabled":true,
		"events":["sandbox.lifecycle.created","sandbox.lifecycle.killed"],"signatureSecret":"`+secret+`"}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	var d Detail
	_ = json.Unmarshal([]byte(body), &d)
	if d.ID == "" || d.TeamID != "team-a" || !d.Enabled || len(d.Events) != 2 || d.CreatedAt.IsZero() {
		t.Fatalf("created: %s", body)
	}
	check := func(name, method, path, team, reqBody string, wantStatus int) string {
		t.Helper()
		status, body := a.do(method, path, team, reqBody)
		if status != wantStatus {
			t.Fatalf("%s: %d %s, want %d", name, status, body, wantStatus)
		}
		if strings.Contains(body, secret) || strings.Contains(strings.ToLower(body), "signaturesecret") {
			t.Fatalf("%s: response reveals the secret: %s", name, body)
		}
		return body
	}
	check("get", "GET", "/events/webhooks/"+d.ID, "team-a", "", 200)
	if body := check("list", "GET", "/events/webhooks", "team-a", "", 200); !strings.Contains(body, d.ID) {
		t.Fatalf("list: %s", body)
	}
	// Another team sees nothing and can touch nothing.
	if body := check("list b", "GET", "/events/webhooks", "team-b", "", 200); strings.TrimSpace(body) != "[]" {
		t.Fatalf("team-b list: %s", body)
	}
	for _, c := range [][2]string{{"GET", ""}, {"PATCH", "/"}, {"DELETE", ""}, {"GET", "/deliveries"}, {"GET", "/stats"}, {"POST", "/test"}} {
		path := "/events/webhooks/" + d.ID
		body := `{"enabled":false}`
		if c[1] != "/" {
			path += c[1]
		}
		check("team-b "+c[0]+c[1], c[0], path, "team-b", body, 404)
	}
	check("no team", "GET", "/events/webhooks", "", "", 401)

	body = check("patch", "PATCH", "/events/webhooks/"+d.ID, "team-a", `{"name":"renamed","events":["sandbox.lifecycle.killed"]}`, 200)
	if !strings.Contains(body, `"renamed"`) || strings.Contains(body, events.SandboxCreated) {
		t.Fatalf("patch: %s", body)
	}
	check("patch bad", "PATCH", "/events/webhooks/"+d.ID, "team-a", `{"url":"nope"}`, 400)

	body = check("test", "POST", "/events/webhooks/"+d.ID+"/test", "team-a", "", 200)
	var at Attempt
	_ = json.Unmarshal([]byte(body), &at)
	if at.Status != stateSuccess || *at.ResponseHTTPStatusCode != 200 {
		t.Fatalf("test: %s", body)
	}
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxKilled, TeamID: "team-a", SandboxID: "sb", EventData: map[string]any{"kill_reason": "request"}})
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxKilled, TeamID: "team-b", SandboxID: "not-yours"})
	waitFor(t, "delivery logged", func() bool {
		body := check("deliveries", "GET", "/events/webhooks/"+d.ID+"/deliveries?eventType=sandbox.lifecycle.killed&deliveryStatus=success", "team-a", "", 200)
		return strings.Contains(body, `"sandboxId":"sb"`) && strings.Contains(body, `"responseHttpStatusCode":200`)
	})
	body = check("deliveries page", "GET", "/events/webhooks/"+d.ID+"/deliveries?limit=1", "team-a", "", 200)
	var page DeliveryPage
	_ = json.Unmarshal([]byte(body), &page)
	if len(page.Data) != 1 || page.NextCursor == nil {
		t.Fatalf("page 1: %s", body)
	}
	body = check("deliveries page 2", "GET", "/events/webhooks/"+d.ID+"/deliveries?limit=1&cursor="+*page.NextCursor, "team-a", "", 200)
	var page2 DeliveryPage
	_ = json.Unmarshal([]byte(body), &page2)
	if len(page2.Data) != 1 || page2.NextCursor != nil || page2.Data[0].DeliveryID == page.Data[0].DeliveryID {
		t.Fatalf("page 2: %s", body)
	}
	if strings.Contains(body, "not-yours") {
		t.Fatal("team-b's event reached team-a's webhook")
	}
	body = check("stats", "GET", "/events/webhooks/"+d.ID+"/stats", "team-a", "", 200)
	var st Stats
	_ = json.Unmarshal([]byte(body), &st)
	if st.Total != 2 || st.Failed != 0 || len(st.Buckets) != StatsBuckets || st.DurationMs.Maximum <= 0 {
		t.Fatalf("stats: %s", body)
	}
	check("redeliver", "POST", "/events/webhooks/"+d.ID+"/deliveries/"+page.Data[0].DeliveryID+"/redeliver", "team-a", "", 202)
	check("redeliver unknown", "POST", "/events/webhooks/"+d.ID+"/deliveries/nope/redeliver", "team-a", "", 404)
	check("delete", "DELETE", "/events/webhooks/"+d.ID, "team-a", "", 200)
	check("gone", "GET", "/events/webhooks/"+d.ID, "team-a", "", 404)
}
