package sandbox

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// pauseDriver is an exitDriver that can freeze, counting thaws; a thaw
// takes a moment, so concurrent wakes overlap.
type pauseDriver struct {
	*exitDriver
	resumes atomic.Int32
}

func (d *pauseDriver) set(id string, st runtime.Status) {
	d.mu.Lock()
	d.state[id] = st
	d.mu.Unlock()
}

func (d *pauseDriver) Pause(_ context.Context, id string) error {
	d.set(id, runtime.StatusPaused)
	return nil
}

func (d *pauseDriver) Resume(_ context.Context, id string) error {
	d.resumes.Add(1)
	time.Sleep(20 * time.Millisecond)
	d.set(id, runtime.StatusRunning)
	return nil
}

func newPauseManager(t *testing.T) (*Manager, *pauseDriver) {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), &changes{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := &pauseDriver{exitDriver: newExitDriver()}
	m := New(Config{Data: datadir.Layout{Root: t.TempDir()}, AgentDir: t.TempDir()}, slog.New(slog.DiscardHandler), st, drv, nopNetwork{}, nil)
	return m, drv
}

// Wake resumes a paused autoResume sandbox once for any number of
// concurrent requests, and never one without autoResume or paused without
// memory.
func TestWake(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		autoResume bool
		fsOnly     bool
		want       bool
		resumes    int32
	}{
		{"autoResume", true, false, true, 1},
		{"no autoResume", false, false, false, 0},
		{"paused without memory", true, true, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, drv := newPauseManager(t)
			l := trackNew(t, m, drv.exitDriver, "sbwake")
			l.lifecycle = Lifecycle{AutoResume: tt.autoResume, Timeout: time.Minute}
			if err := m.pause(t.Context(), "sbwake"); err != nil {
				t.Fatal(err)
			}
			if tt.fsOnly {
				if err := os.MkdirAll(m.layersDir("sbwake"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(m.layersDir("sbwake"), fsPausedFile), []byte(`{"lower":["/x"]}`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			var woken atomic.Int32
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if m.Wake(t.Context(), "sbwake") {
						woken.Add(1)
					}
				}()
			}
			wg.Wait()
			if got := woken.Load(); tt.want && got != 16 || !tt.want && got != 0 {
				t.Errorf("%d of 16 wakes answered true, want all %v", got, tt.want)
			}
			if got := drv.resumes.Load(); got != tt.resumes {
				t.Errorf("%d resumes, want %d", got, tt.resumes)
			}
			l.mu.Lock()
			state, end := l.sb.State, l.sb.EndAt
			l.mu.Unlock()
			if want := map[bool]store.SandboxState{true: store.StateRunning, false: store.StatePaused}[tt.want]; state != want {
				t.Errorf("state %s, want %s", state, want)
			}
			if tt.want && time.Until(end) > time.Minute {
				t.Errorf("end time %v: an auto-resume gives the create timeout (1m)", end)
			}
		})
	}
}
