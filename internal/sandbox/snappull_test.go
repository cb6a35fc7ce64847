package sandbox

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// stallingStore is a blob store whose reads of one blob wait until
// released: a big layer still arriving.
type stallingStore struct {
	blob.Store
	stall   blob.Digest
	entered chan struct{}
	release chan struct{}
}

func (s *stallingStore) Open(ctx context.Context, d blob.Digest) (io.ReadCloser, error) {
	if d == s.stall {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.Open(ctx, d)
}

// The attack: team A starts a sandbox from a huge snapshot on a node
// that holds no copy, and its pull takes minutes. Team B's create from
// its own snapshot on that node must not wait for A's pull.
func TestSnapshotPullsDoNotWaitForOtherSnapshots(t *testing.T) {
	t.Parallel()
	bs, err := blob.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stalling := &stallingStore{Store: bs, entered: make(chan struct{}), release: make(chan struct{})}
	cache, err := blob.NewCache(t.TempDir(), stalling, 1<<30, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e := &snapshotEnv{blobs: bs, reg: template.NewRegistry(slog.New(slog.DiscardHandler))}
	e.lifecycleEnv = newLifecycle(t, nil, func(m *Manager) {
		m.blobs = &layer.Blobs{Store: bs, Puller: &layer.Puller{Cache: cache}, Layers: m.store.(store.Layers)}
	})
	e.st = e.m.store.(store.Snapshots)
	if err := e.m.SetSnapshotRegistry(t.Context(), e.reg, e.st); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	big := e.taken(t, "snapbig", "team-a", "huge", now)
	e.taken(t, "snapsmall", "team-b", "small", now)
	stalling.stall = blob.Digest(big.Layers[0].Digest)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	aDone := make(chan error, 1)
	go func() { aDone <- e.m.syncSnapshot(ctx, "team-a", "huge") }()
	<-stalling.entered // A's pull is reading its layer

	bDone := make(chan error, 1)
	go func() { bDone <- e.m.syncSnapshot(ctx, "team-b", "small") }()
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("team B's pull: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("team B's pull of its own snapshot still waits for team A's pull of another one")
	}
	close(stalling.release)
	if err := <-aDone; err != nil {
		t.Fatalf("team A's pull: %v", err)
	}
}
