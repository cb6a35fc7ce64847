package refine

import (
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

func TestStorePersistsAcrossHandlers(t *testing.T) {
	t.Parallel()
	db, _ := eventstest.TempDB(t)
	h1 := NewHandler("http://127.0.0.1:1", sqlstore.New(db, nil), slog.New(slog.DiscardHandler))
	if h1.db == nil {
		t.Fatal("handler did not set up its table")
	}
	ctx := t.Context()
	done := &Result{ID: "ref_done", Status: StatusRunning, StartedAt: time.Now().UTC(), Attempts: []*Attempt{}}
	running := &Result{ID: "ref_running", Status: StatusRunning, StartedAt: time.Now().UTC(), Attempts: []*Attempt{}}
	for _, r := range []*Result{done, running} {
		if err := h1.db.insert(ctx, "t1", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := h1.db.insert(ctx, "t1", done); !errors.Is(err, errDuplicate) {
		t.Fatalf("second insert of one ID: err = %v, want errDuplicate", err)
	}
	done.Status, done.Success, done.Code = StatusSucceeded, true, "print(1)\n"
	done.Attempts = []*Attempt{{Number: 1, Passed: true, Code: "print(1)\n"}}
	if err := h1.db.save(ctx, "t1", done); err != nil {
		t.Fatal(err)
	}

	// A new handler on the same database: a restarted server.
	h2 := NewHandler("http://127.0.0.1:1", sqlstore.New(db, nil), slog.New(slog.DiscardHandler))
	tests := []struct {
		team, id   string
		status     int
		wantStatus string
	}{
		{"t1", "ref_done", http.StatusOK, StatusSucceeded},
		{"t1", "ref_running", http.StatusOK, StatusFailed}, // interrupted by the restart
		{"t2", "ref_done", http.StatusNotFound, ""},
		{"t1", "ref_missing", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		srv := serveAs(t, h2, tt.team)
		resp, err := http.Get(srv.URL + "/refinements/" + tt.id)
		if err != nil {
			t.Fatal(err)
		}
		var res Result
		_ = jsonDecode(resp, &res)
		if resp.StatusCode != tt.status || res.Status != tt.wantStatus {
			t.Errorf("team %s GET %s: %d %q, want %d %q", tt.team, tt.id, resp.StatusCode, res.Status, tt.status, tt.wantStatus)
		}
		if tt.id == "ref_done" && tt.status == 200 && (res.Code != "print(1)\n" || len(res.Attempts) != 1) {
			t.Errorf("stored result lost fields: %+v", res)
		}
		if tt.id == "ref_running" && res.Error == "" {
			t.Error("interrupted refinement has no error saying so")
		}
	}
}
