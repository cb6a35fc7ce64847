package template

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestBuildLogsPages: a query reads the log page by page and answers the
// first (forward) or last (backward) matches, across page boundaries.
func TestBuildLogsPages(t *testing.T) {
	e := setup(t, filepath.Join(t.TempDir(), "db"), t.TempDir(), 1<<20)
	ctx := t.Context()
	rec, bid, err := e.svc.Request(ctx, "team-a", RequestV3{Name: "paged"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 3*buildLogPage + 7
	var entries []LogEntry
	for i := 0; i < n; i++ {
		level := "info"
		if i%10 == 0 {
			level = "error"
		}
		entries = append(entries, LogEntry{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), Level: level, Message: fmt.Sprint(i)})
	}
	if err := e.svc.store.AppendBuildLog(ctx, bid, entries...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q          LogQuery
		first, num string
		count      int
	}{
		{LogQuery{Limit: 3}, "0", "2", 3},
		{LogQuery{Limit: 3, Backward: true}, fmt.Sprint(n - 1), fmt.Sprint(n - 3), 3},
		{LogQuery{Limit: 2, Level: "error"}, "0", "10", 2},
		{LogQuery{Limit: 2, Level: "error", Backward: true}, "1500", "1490", 2},
		{LogQuery{Limit: 2, Cursor: t0.Add(1000 * time.Millisecond)}, "1000", "1001", 2},
		{LogQuery{Limit: 2, Cursor: t0.Add(1000 * time.Millisecond), Backward: true}, "1000", "999", 2},
		{LogQuery{Limit: 100, Cursor: t0.Add(time.Duration(n-2) * time.Millisecond)}, fmt.Sprint(n - 2), fmt.Sprint(n - 1), 2},
	} {
		got, err := e.svc.BuildLogs(ctx, "team-a", rec.ID, bid, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.count || got[0].Message != tc.first || got[len(got)-1].Message != tc.num {
			t.Errorf("%+v: got %d lines %v…%v, want %d %s…%s", tc.q, len(got), got[0].Message, got[len(got)-1].Message, tc.count, tc.first, tc.num)
		}
	}
}
