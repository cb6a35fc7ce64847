package envd

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

type entry struct {
	Name, Type, Path, Size, Permissions, Owner, Group, ModifiedTime string
	Mode                                                            uint32
	SymlinkTarget                                                   *string
}

func TestFilesystemUnary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "f.txt"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	var st struct{ Entry entry }
	if code := e.call(t, "filesystem.Filesystem/Stat", map[string]any{"path": filepath.Join(dir, "f.txt")}, &st); code != 200 {
		t.Fatalf("Stat status %d", code)
	}
	if st.Entry.Type != "FILE_TYPE_FILE" || st.Entry.Size != "5" || st.Entry.Permissions != "-rw-r-----" ||
		st.Entry.Mode != 0o640 || st.Entry.Name != "f.txt" || st.Entry.Owner == "" || st.Entry.ModifiedTime == "" {
		t.Errorf("Stat = %+v", st.Entry)
	}
	e.call(t, "filesystem.Filesystem/Stat", map[string]any{"path": filepath.Join(dir, "link")}, &st)
	if st.Entry.Type != "FILE_TYPE_SYMLINK" || st.Entry.SymlinkTarget == nil || *st.Entry.SymlinkTarget != filepath.Join(dir, "f.txt") {
		t.Errorf("Stat(link) = %+v", st.Entry)
	}

	var errBody map[string]any
	tests := []struct {
		method string
		req    map[string]any
		status int
		code   string
	}{
		{"Stat", map[string]any{"path": filepath.Join(dir, "missing")}, 404, "not_found"},
		{"MakeDir", map[string]any{"path": filepath.Join(dir, "a/b/c")}, 200, ""},
		{"MakeDir", map[string]any{"path": filepath.Join(dir, "a/b/c")}, 409, "already_exists"},
		{"MakeDir", map[string]any{"path": filepath.Join(dir, "f.txt")}, 400, "invalid_argument"},
		{"Move", map[string]any{"source": filepath.Join(dir, "f.txt"), "destination": filepath.Join(dir, "a/moved.txt")}, 200, ""},
		{"Move", map[string]any{"source": filepath.Join(dir, "f.txt"), "destination": filepath.Join(dir, "x")}, 404, "not_found"},
		{"ListDir", map[string]any{"path": filepath.Join(dir, "a/moved.txt")}, 400, "invalid_argument"},
		{"ListDir", map[string]any{"path": filepath.Join(dir, "nope")}, 404, "not_found"},
		{"Remove", map[string]any{"path": filepath.Join(dir, "link")}, 200, ""},
		{"Remove", map[string]any{"path": filepath.Join(dir, "link")}, 200, ""}, // RemoveAll: gone is fine
		{"Remove", map[string]any{"path": filepath.Join(dir, "never/was/here")}, 200, ""},
	}
	for _, tt := range tests {
		errBody = nil
		status := e.call(t, "filesystem.Filesystem/"+tt.method, tt.req, &errBody)
		if status != tt.status || (tt.code != "" && errBody["code"] != tt.code) {
			t.Errorf("%s %v: %d %v, want %d %s", tt.method, tt.req, status, errBody, tt.status, tt.code)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a/moved.txt")); err != nil {
		t.Errorf("Move did not move: %v", err)
	}

	list := func(depth int) []string {
		var resp struct{ Entries []entry }
		e.call(t, "filesystem.Filesystem/ListDir", map[string]any{"path": dir, "depth": depth}, &resp)
		var paths []string
		for _, en := range resp.Entries {
			rel, _ := filepath.Rel(dir, en.Path)
			paths = append(paths, rel+":"+en.Type)
		}
		sort.Strings(paths)
		return paths
	}
	for _, tt := range []struct {
		depth int
		want  []string
	}{
		{0, []string{"a:FILE_TYPE_DIRECTORY"}},
		{1, []string{"a:FILE_TYPE_DIRECTORY"}},
		{2, []string{"a/b:FILE_TYPE_DIRECTORY", "a/moved.txt:FILE_TYPE_FILE", "a:FILE_TYPE_DIRECTORY"}},
		{5, []string{"a/b/c:FILE_TYPE_DIRECTORY", "a/b:FILE_TYPE_DIRECTORY", "a/moved.txt:FILE_TYPE_FILE", "a:FILE_TYPE_DIRECTORY"}},
	} {
		if got := list(tt.depth); !equal(got, tt.want) {
			t.Errorf("ListDir depth %d = %v, want %v", tt.depth, got, tt.want)
		}
	}
}

func equal(a, b []string) bool {
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

func TestRelativePathsResolveAgainstHome(t *testing.T) {
	addUser(t, "sbxenvdfs")
	e := newEnv(t, nil)
	var st struct{ Entry entry }
	if code := e.call(t, "filesystem.Filesystem/MakeDir", map[string]any{"path": "proj/src"}, &st, "Authorization", basic("sbxenvdfs")); code != 200 {
		t.Fatalf("MakeDir status %d", code)
	}
	if st.Entry.Path != "/home/sbxenvdfs/proj/src" || st.Entry.Owner != "sbxenvdfs" || st.Entry.Group != "sbxenvdfs" {
		t.Errorf("MakeDir entry %+v", st.Entry)
	}
	fi, err := os.Stat("/home/sbxenvdfs/proj")
	if err != nil || fi.Sys() == nil {
		t.Fatal(err)
	}
	e.call(t, "filesystem.Filesystem/Stat", map[string]any{"path": "~/proj"}, &st, "Authorization", basic("sbxenvdfs"))
	if st.Entry.Owner != "sbxenvdfs" {
		t.Errorf("parent created by MakeDir owned by %s", st.Entry.Owner)
	}
}

func TestWatchDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := e.stream(t, "filesystem.Filesystem/WatchDir", map[string]any{"path": dir, "recursive": true, "includeEntry": true})
	if m := s.next(); m.raw != `{"start":{}}` {
		t.Fatalf("first message %s, want start", m.raw)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "new.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		m := s.next()
		fe, ok := m.data["filesystem"].(map[string]any)
		if !ok {
			t.Fatalf("unexpected %s", m.raw)
		}
		got = append(got, fe["name"].(string)+":"+fe["type"].(string))
		if en, _ := fe["entry"].(map[string]any); en == nil || en["name"] != "new.txt" {
			t.Errorf("event without entry: %s", m.raw)
		}
	}
	if got[0] != "sub/new.txt:EVENT_TYPE_CREATE" || got[1] != "sub/new.txt:EVENT_TYPE_WRITE" {
		t.Errorf("events %v", got)
	}

	// Watching a file is a clear error.
	bad := e.stream(t, "filesystem.Filesystem/WatchDir", map[string]any{"path": filepath.Join(dir, "sub", "new.txt")})
	if m := bad.next(); !m.end || !has(m.raw, "invalid_argument") {
		t.Errorf("watch a file: %s", m.raw)
	}
}

func TestPollingWatcher(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()
	var cw struct{ WatcherID string }
	if code := e.call(t, "filesystem.Filesystem/CreateWatcher", map[string]any{"path": dir}, &cw); code != 200 || cw.WatcherID == "" {
		t.Fatalf("CreateWatcher %d %+v", code, cw)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	var evs struct {
		Events []struct{ Name, Type string }
	}
	waitFor(t, "the create event", func() bool {
		e.call(t, "filesystem.Filesystem/GetWatcherEvents", map[string]any{"watcherId": cw.WatcherID}, &evs)
		return len(evs.Events) > 0
	})
	if evs.Events[0].Name != "d" || evs.Events[0].Type != "EVENT_TYPE_CREATE" {
		t.Errorf("events %+v", evs.Events)
	}
	if code := e.call(t, "filesystem.Filesystem/RemoveWatcher", map[string]any{"watcherId": cw.WatcherID}, nil); code != 200 {
		t.Errorf("RemoveWatcher %d", code)
	}
	var errBody map[string]string
	if code := e.call(t, "filesystem.Filesystem/GetWatcherEvents", map[string]any{"watcherId": cw.WatcherID}, &errBody); code != 404 {
		t.Errorf("events of removed watcher: %d %v", code, errBody)
	}
}
