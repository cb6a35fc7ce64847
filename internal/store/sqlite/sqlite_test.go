package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlite"
	"github.com/sbxdev/sbx/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, rec store.Recorder) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), rec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
