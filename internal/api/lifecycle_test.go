package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/sandbox"
)

// fakeSnapshots lists n snapshots of team "t", newest first, as the
// manager does.
type fakeSnapshots struct {
	Sandboxes
	n int
}

func (f fakeSnapshots) CreateSnapshot(context.Context, string, string, string) (sandbox.SnapshotInfo, error) {
	return sandbox.SnapshotInfo{}, nil
}

func (f fakeSnapshots) ListSnapshots(_ context.Context, teamID, _, _ string) ([]sandbox.SnapshotInfo, error) {
	var out []sandbox.SnapshotInfo
	for i := range f.n {
		out = append(out, sandbox.SnapshotInfo{ID: fmt.Sprintf("s%02d", i), TeamID: teamID, Name: map[bool]string{true: "named"}[i == 0],
			CreatedAt: time.Unix(int64(100-i), 0)})
	}
	return out, nil
}

// TestListSnapshotsPaging: every page but the last carries X-Next-Token
// (the SDK's paginator stops on its absence), pages cover each snapshot
// once, and a named snapshot's ID is its name.
func TestListSnapshotsPaging(t *testing.T) {
	for _, tt := range []struct{ n, limit, pages int }{{0, 2, 1}, {1, 2, 1}, {4, 2, 2}, {5, 2, 3}, {3, 100, 1}} {
		s := &Server{sandboxes: fakeSnapshots{n: tt.n}}
		var seen []string
		token, pages := "", 0
		for {
			url := fmt.Sprintf("/snapshots?limit=%d", tt.limit)
			if token != "" {
				url += "&nextToken=" + token
			}
			r := httptest.NewRequest(http.MethodGet, url, nil)
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: "t"}))
			w := httptest.NewRecorder()
			s.listSnapshots(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("n=%d: %d %s", tt.n, w.Code, w.Body)
			}
			var page []snapshotJSON
			if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil {
				t.Fatal(err)
			}
			pages++
			for _, p := range page {
				seen = append(seen, p.SnapshotID)
			}
			token = w.Header().Get("X-Next-Token")
			if token == "" || pages > 10 {
				break
			}
		}
		if pages != tt.pages || len(seen) != tt.n {
			t.Errorf("n=%d limit=%d: %d pages %v, want %d pages of all", tt.n, tt.limit, pages, seen, tt.pages)
		}
		if tt.n > 0 && seen[0] != "named:default" {
			t.Errorf("first snapshot %q, want named:default", seen[0])
		}
		if tt.n > 1 && seen[1] != "s01:default" {
			t.Errorf("second snapshot %q, want s01:default", seen[1])
		}
	}
}
