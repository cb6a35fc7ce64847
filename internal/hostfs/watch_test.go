package hostfs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchWakesOnNewEntry(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.Watch()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Wait(time.Millisecond) {
		t.Fatal("Wait reported an entry in an empty dir")
	}
	if err := os.WriteFile(filepath.Join(dir, "sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Generous: the event is already queued; a timeout means it was missed.
	if !w.Wait(10 * time.Second) {
		t.Fatal("Wait missed the new entry")
	}
	if w.Wait(time.Millisecond) {
		t.Error("Wait reported the same entry twice")
	}
}
