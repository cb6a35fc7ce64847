package template

import (
	"fmt"
	"testing"
	"time"
)

type buildCalls []string

func (b *buildCalls) BuildStarted(team, name string) { *b = append(*b, "start "+team+"/"+name) }
func (b *buildCalls) BuildFinished(team, name string, ok bool, d time.Duration) {
	*b = append(*b, fmt.Sprintf("end %s/%s %v %s", team, name, ok, d))
}

// TestBuildObserver: a build is timed from its started event to its
// succeeded or failed one; an end without a start (a build of an earlier
// process) is not observed.
func TestBuildObserver(t *testing.T) {
	t.Parallel()
	var calls buildCalls
	bo := buildObserver{o: &calls}
	rec := Record{ID: "tpl1", TeamID: "t1", Names: []string{"web"}}
	t0 := time.Unix(1000, 0)
	bo.event(EventBuildStarted, rec, BuildRecord{ID: "b1"}, t0)
	bo.event(EventBuildStarted, Record{ID: "tpl2", TeamID: "t2"}, BuildRecord{ID: "b2"}, t0)
	bo.event(EventBuildFailed, rec, BuildRecord{ID: "b1"}, t0.Add(90*time.Second))
	bo.event(EventBuildSucceeded, Record{ID: "tpl2", TeamID: "t2"}, BuildRecord{ID: "b2"}, t0.Add(time.Second))
	bo.event(EventBuildSucceeded, rec, BuildRecord{ID: "old"}, t0)
	want := []string{"start t1/web", "start t2/tpl2", "end t1/web false 1m30s", "end t2/tpl2 true 1s"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	if len(bo.started) != 0 {
		t.Errorf("builds left timing: %v", bo.started)
	}
}
