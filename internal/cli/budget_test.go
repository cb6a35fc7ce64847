package cli

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/budget"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/usage"
)

// budgetServer serves the real budget API over SQLite; key "key-a" is team
// "team-a" (named "alpha"), key "admin" the admin.
func budgetServer(t *testing.T) string {
	t.Helper()
	db, _ := eventstest.TempDB(t)
	logger := slog.New(slog.DiscardHandler)
	evlog := events.NewLog(db, logger)
	b, err := budget.NewWithRepository(t.Context(), sqlstore.New(db, nil), evlog, usage.NewService(evlog, usage.DefaultRates(), nil), nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	b.Register(mux)
	mux.HandleFunc("GET /teams", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"teamID": "team-a", "name": "alpha"}]`))
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-API-Key") {
		case "key-a":
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: "team-a"}))
		case "admin":
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{Admin: true}))
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestBudgetCLI(t *testing.T) {
	api := budgetServer(t)
	flags := []string{"--api-url", api, "--api-key", "key-a", "--admin-key", "admin"}
	run := func(args ...string) (string, error) { return sbx(t, t.Context(), append(args, flags...)...) }

	if out, err := run("budget", "set", "--max-concurrent", "2"); err == nil || !strings.Contains(err.Error(), "pass --team") {
		t.Errorf("set without --team: %v\n%s", err, out)
	}
	if out, err := sbx(t, t.Context(), "budget", "set", "--team", "alpha", "--max-concurrent", "2", "--api-url", api, "--admin-key", "key-a"); err == nil || !strings.Contains(err.Error(), "403") && !strings.Contains(err.Error(), "admin") {
		t.Errorf("set with a team key as the admin key: %v\n%s", err, out)
	}
	out, err := run("budget", "set", "--team", "alpha", "--max-concurrent", "2", "--max-daily-spend", "1.5", "--warn-at", "80", "--action", "pause")
	if err != nil {
		t.Fatalf("set: %v\n%s", err, out)
	}
	for _, want := range []string{"concurrent sandboxes  2", "spend today           $1.5000", "warn at               80%", "pause"} {
		if !strings.Contains(out, want) {
			t.Errorf("set output lacks %q:\n%s", want, out)
		}
	}
	// Flags left out keep their value; 0 removes a limit.
	if out, err = run("budget", "set", "--team", "team-a", "--max-concurrent", "0", "--json"); err != nil {
		t.Fatalf("set: %v\n%s", err, out)
	}
	var b budget.Body
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if b.TeamID != "team-a" || b.MaxConcurrent != 0 || b.MaxDailySpend != 1.5 || b.Action != "pause" || b.WarnAtPercent != 80 {
		t.Fatalf("budget after second set = %+v", b)
	}
	if out, err = run("budget", "get"); err != nil || !strings.Contains(out, "concurrent sandboxes  no limit") {
		t.Fatalf("get: %v\n%s", err, out)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"budget", "set", "--team", "alpha"}, "nothing to set"},
		{[]string{"budget", "set", "--team", "alpha", "--max-concurrent", "-3"}, "maxConcurrent must be ≥ 0"},
		{[]string{"budget", "set", "--team", "alpha", "--action", "nuke"}, "use none, pause or kill"},
		{[]string{"budget", "set", "--team", "alpha", "--warn-at", "120"}, "between 0 and 100"},
		{[]string{"budget", "set", "--team", "nobody", "--warn-at", "20"}, `no team "nobody"`},
	} {
		if _, err := run(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	if _, err := sbx(t, t.Context(), "budget", "get", "--api-url", api, "--api-key", "wrong"); err == nil {
		t.Error("get with a bad key succeeded")
	}
}
