package events_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

func newLog(t *testing.T) *events.Log {
	t.Helper()
	l, _ := newLogDB(t)
	return l
}

func newLogDB(t *testing.T) (*events.Log, *sqldb.DB) {
	t.Helper()
	db, _ := eventstest.TempDB(t)
	l := events.NewLog(db, slog.New(slog.DiscardHandler))
	base := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	n := 0
	l.SetClock(func() time.Time { n++; return base.Add(time.Duration(n) * time.Second) })
	return l, db
}

func appendAll(t *testing.T, l *events.Log, evs ...events.Event) []events.Event {
	t.Helper()
	for i := range evs {
		if err := l.Append(t.Context(), &evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

func TestAppendFillsAndListFilters(t *testing.T) {
	t.Parallel()
	l := newLog(t)
	evs := appendAll(t, l,
		events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "sb1", EventData: map[string]any{"sandbox_metadata": map[string]any{"k": "v"}}},
		events.Event{Type: events.SandboxCreated, TeamID: "b", SandboxID: "sb2"},
		events.Event{Type: events.SandboxKilled, TeamID: "a", SandboxID: "sb1", EventData: map[string]any{"kill_reason": "request"}},
		events.Event{Type: events.TemplateBuildStarted, TeamID: "a", SandboxBuildID: "bld"},
	)
	for i, ev := range evs {
		if ev.Seq != int64(i+1) || ev.ID == "" || ev.Version != events.CurrentVersion {
			t.Fatalf("event %d not filled: %+v", i, ev)
		}
	}
	if !evs[0].Timestamp.Equal(time.Date(2026, 11, 26, 1, 0, 1, 0, time.UTC)) {
		t.Fatalf("timestamp from injected clock: %v", evs[0].Timestamp)
	}
	tests := []struct {
		name string
		f    events.Filter
		want []int64
	}{
		{"team newest first", events.Filter{TeamID: "a"}, []int64{4, 3, 1}},
		{"team asc", events.Filter{TeamID: "a", OrderAsc: true}, []int64{1, 3, 4}},
		{"sandbox", events.Filter{TeamID: "a", SandboxID: "sb1"}, []int64{3, 1}},
		{"other team cannot see sb1", events.Filter{TeamID: "b", SandboxID: "sb1"}, nil},
		{"types", events.Filter{TeamID: "a", Types: []string{events.SandboxKilled, events.TemplateBuildStarted}}, []int64{4, 3}},
		{"offset limit", events.Filter{TeamID: "a", Offset: 1, Limit: 1}, []int64{3}},
	}
	for _, tt := range tests {
		got, err := l.List(t.Context(), tt.f)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, ev := range got {
			seqs = append(seqs, ev.Seq)
		}
		if !equal(seqs, tt.want) {
			t.Errorf("%s: seqs %v, want %v", tt.name, seqs, tt.want)
		}
	}
	got, _ := l.List(t.Context(), events.Filter{TeamID: "a", SandboxID: "sb1", OrderAsc: true})
	if got[1].EventData["kill_reason"] != "request" || got[0].EventData["sandbox_metadata"].(map[string]any)["k"] != "v" {
		t.Fatalf("eventData round trip: %+v", got)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAppendTxRollbackLeavesNothing(t *testing.T) {
	t.Parallel()
	l, db := newLogDB(t)
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AppendTx(t.Context(), tx, &events.Event{Type: events.SandboxCreated, TeamID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.List(t.Context(), events.Filter{}); len(got) != 0 {
		t.Fatalf("rolled back event is visible: %+v", got)
	}
}

func TestWaitWakesOnNotify(t *testing.T) {
	t.Parallel()
	l := newLog(t)
	got := make(chan []events.Event, 1)
	go func() {
		evs, err := l.Wait(t.Context(), 0, 10, events.Filter{TeamID: "a"})
		if err != nil {
			t.Error(err)
		}
		got <- evs
	}()
	appendAll(t, l, events.Event{Type: events.SandboxCreated, TeamID: "b"}) // other team: keeps waiting
	appendAll(t, l, events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "x"})
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].SandboxID != "x" {
			t.Fatalf("Wait returned %+v", evs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not wake up after Append")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Wait(ctx, 2, 10, events.Filter{}); err == nil {
		t.Fatal("Wait on a canceled context returned no error")
	}
}

func newServer(t *testing.T, l *events.Log) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h := events.NewHandler(l, slog.New(slog.DiscardHandler))
	h.Keepalive = 50 * time.Millisecond
	h.Register(mux)
	srv := httptest.NewServer(eventstest.AsTeam(mux))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url, team string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if team != "" {
		req.Header.Set(eventstest.TeamHeader, team)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestREST(t *testing.T) {
	t.Parallel()
	l := newLog(t)
	appendAll(t, l,
		events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "sb1", SandboxTemplateID: "base"},
		events.Event{Type: events.SandboxKilled, TeamID: "a", SandboxID: "sb1", EventData: map[string]any{"kill_reason": "timeout"}},
		events.Event{Type: events.SandboxCreated, TeamID: "b", SandboxID: "sb2"},
	)
	srv := newServer(t, l)
	tests := []struct {
		name, path, team string
		status           int
		contains         []string
		excludes         []string
	}{
		{"sandbox newest first", "/events/sandboxes/sb1", "a", 200, []string{`"type":"sandbox.lifecycle.killed"`, `"kill_reason":"timeout"`, `"sandboxTeamId":"a"`, `"sandboxTemplateId":"base"`}, nil},
		{"team isolation", "/events/sandboxes/sb1", "b", 200, []string{"[]"}, []string{"sb1"}},
		{"team list", "/events/sandboxes?types=sandbox.lifecycle.created", "b", 200, []string{`"sandboxId":"sb2"`, `"eventData":{}`}, []string{"sb1"}},
		{"bad limit", "/events/sandboxes?limit=0", "a", 400, []string{"limit must be an integer from 1 to 100"}, nil},
		{"bad offset", "/events/sandboxes?offset=-1", "a", 400, []string{"offset must be"}, nil},
		{"bad orderAsc", "/events/sandboxes?orderAsc=maybe", "a", 400, []string{"orderAsc must be true or false"}, nil},
		{"unknown type", "/events/sandboxes?types=sandbox.exploded", "a", 400, []string{`unknown event type \"sandbox.exploded\"`}, nil},
		{"no team", "/events/sandboxes", "", 401, []string{"X-API-Key"}, nil},
	}
	for _, tt := range tests {
		status, body := get(t, srv.URL+tt.path, tt.team)
		if status != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, status, tt.status, body)
		}
		for _, c := range tt.contains {
			if !strings.Contains(body, c) {
				t.Errorf("%s: body %s lacks %s", tt.name, body, c)
			}
		}
		for _, c := range tt.excludes {
			if strings.Contains(body, c) {
				t.Errorf("%s: body %s contains %s", tt.name, body, c)
			}
		}
	}
	_, body := get(t, srv.URL+"/events/sandboxes/sb1?orderAsc=true&limit=1", "a")
	var page []map[string]any
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page) != 1 || page[0]["type"] != events.SandboxCreated {
		t.Fatalf("asc page: %s", body)
	}
}

type sseEvent struct{ id, typ, data string }

func readSSE(t *testing.T, sc *bufio.Scanner, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.id != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d of %d events: %v", len(out), n, sc.Err())
	}
	return out
}

func openStream(t *testing.T, url, team, lastID string) *bufio.Scanner {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set(eventstest.TeamHeader, team)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	// The first line is the opening comment, written once the stream is set up.
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), ":") {
		t.Fatalf("no opening comment: %q", sc.Text())
	}
	return sc
}

func TestStreamLiveAndResume(t *testing.T) {
	t.Parallel()
	l := newLog(t)
	appendAll(t, l, events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "old"})
	srv := newServer(t, l)

	live := openStream(t, srv.URL+"/events/stream", "a", "")
	appendAll(t, l,
		events.Event{Type: events.SandboxCreated, TeamID: "b", SandboxID: "other-team"},
		events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "new"},
		events.Event{Type: events.SandboxKilled, TeamID: "a", SandboxID: "new"},
	)
	got := readSSE(t, live, 2)
	if got[0].id != "3" || got[0].typ != events.SandboxCreated || !strings.Contains(got[0].data, `"sandboxId":"new"`) || got[1].id != "4" {
		t.Fatalf("live stream: %+v", got)
	}

	// Resume after the first event: the client missed 3 and 4.
	resumed := openStream(t, srv.URL+"/events/stream", "a", "1")
	got = readSSE(t, resumed, 2)
	if got[0].id != "3" || got[1].id != "4" || got[1].typ != events.SandboxKilled {
		t.Fatalf("resumed stream: %+v", got)
	}
	// Idle: keepalive comments arrive.
	if !resumed.Scan() || !strings.HasPrefix(resumed.Text(), ": keepalive") {
		t.Fatalf("expected a keepalive, got %q", resumed.Text())
	}
	if status, body := get(t, srv.URL+"/events/stream?lastEventId=abc", "a"); status != 400 || !strings.Contains(body, "Last-Event-ID") {
		t.Fatalf("bad Last-Event-ID: %d %s", status, body)
	}
}
