package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"

	"github.com/sbxdev/sbx/internal/envd/connect"
)

// EventType is the proto enum EventType, sent by name.
type EventType string

// Event types of FilesystemEvent.
const (
	EventCreate EventType = "EVENT_TYPE_CREATE"
	EventWrite  EventType = "EVENT_TYPE_WRITE"
	EventRemove EventType = "EVENT_TYPE_REMOVE"
	EventRename EventType = "EVENT_TYPE_RENAME"
	EventChmod  EventType = "EVENT_TYPE_CHMOD"
)

// Event is FilesystemEvent.
type Event struct {
	Name  string     `json:"name"`
	Type  EventType  `json:"type"`
	Entry *EntryInfo `json:"entry,omitempty"`
}

type (
	watchRequest struct {
		Path               string `json:"path"`
		Recursive          bool   `json:"recursive"`
		IncludeEntry       bool   `json:"includeEntry"`
		AllowNetworkMounts bool   `json:"allowNetworkMounts"`
	}
	watchResponse struct {
		Start      *struct{} `json:"start,omitempty"`
		Filesystem *Event    `json:"filesystem,omitempty"`
		Keepalive  *struct{} `json:"keepalive,omitempty"`
	}
	createWatcherResponse struct {
		WatcherID string `json:"watcherId"`
	}
	watcherRequest struct {
		WatcherID string `json:"watcherId"`
	}
	watcherEventsResponse struct {
		Events []Event `json:"events"`
	}
)

// watch is an fsnotify watcher on one directory (and, when recursive, on
// every directory below it, including ones created later).
type watch struct {
	root      string
	recursive bool
	entries   bool
	w         *fsnotify.Watcher
}

func newWatch(root string, req *watchRequest) (*watch, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, pathError(root, err)
	}
	if !fi.IsDir() {
		return nil, connect.Errorf(connect.InvalidArgument, "%s is not a directory; watch its parent instead", root)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, connect.Errorf(connect.ResourceExhausted, "create watcher: %v", err)
	}
	w := &watch{root: root, recursive: req.Recursive, entries: req.IncludeEntry, w: fw}
	if err := w.add(root); err != nil {
		_ = fw.Close()
		return nil, err
	}
	return w, nil
}

func (w *watch) add(dir string) error {
	if !w.recursive {
		if err := w.w.Add(dir); err != nil {
			return pathError(dir, err)
		}
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return pathError(p, err)
			}
			return nil // vanished or unreadable subtree
		}
		if d.IsDir() {
			if err := w.w.Add(p); err != nil && p == dir {
				return pathError(p, err)
			}
		}
		return nil
	})
}

// convert maps one fsnotify event to FilesystemEvents (an event may carry
// several operations) and starts watching new subdirectories.
func (w *watch) convert(ev fsnotify.Event) []Event {
	rel, err := filepath.Rel(w.root, ev.Name)
	if err != nil {
		rel = ev.Name
	}
	var entry *EntryInfo
	if w.entries || (w.recursive && ev.Has(fsnotify.Create)) {
		entry, _ = Entry(ev.Name)
	}
	if w.recursive && ev.Has(fsnotify.Create) && entry != nil && entry.Type == TypeDirectory {
		_ = w.add(ev.Name)
	}
	if !w.entries {
		entry = nil
	}
	var out []Event
	for _, m := range []struct {
		op fsnotify.Op
		t  EventType
	}{
		{fsnotify.Create, EventCreate}, {fsnotify.Write, EventWrite}, {fsnotify.Remove, EventRemove},
		{fsnotify.Rename, EventRename}, {fsnotify.Chmod, EventChmod},
	} {
		if ev.Has(m.op) {
			out = append(out, Event{Name: rel, Type: m.t, Entry: entry})
		}
	}
	return out
}

func (w *watch) close() { _ = w.w.Close() }

func (s *Service) watchDir(ctx context.Context, r *http.Request, req *watchRequest, st *connect.Stream) error {
	_, p, err := s.resolve(r, req.Path)
	if err != nil {
		return err
	}
	w, err := newWatch(p, req)
	if err != nil {
		return err
	}
	defer w.close()
	if err := st.Send(watchResponse{Start: &struct{}{}}); err != nil {
		return err
	}
	for {
		select {
		case ev, ok := <-w.w.Events:
			if !ok {
				return nil
			}
			for _, e := range w.convert(ev) {
				if err := st.Send(watchResponse{Filesystem: &e}); err != nil {
					return err
				}
			}
		case err, ok := <-w.w.Errors:
			if ok && err != nil {
				return connect.Errorf(connect.Internal, "watch %s: %v", p, err)
			}
		case <-st.Keepalive():
			if err := st.Send(watchResponse{Keepalive: &struct{}{}}); err != nil {
				return err
			}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The SDK's watch timeout: end the stream cleanly.
				return nil
			}
			return ctx.Err()
		}
	}
}

// maxBuffered bounds the events a polling watcher keeps between polls.
const maxBuffered = 10000

// polled is a watcher whose events are collected for GetWatcherEvents.
type polled struct {
	w      *watch
	mu     sync.Mutex
	events []Event
	err    error
}

type watcherTable struct {
	mu sync.Mutex
	m  map[string]*polled
}

func newWatcherTable() *watcherTable { return &watcherTable{m: make(map[string]*polled)} }

func (t *watcherTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, pw := range t.m {
		pw.w.close()
		delete(t.m, id)
	}
}

func (s *Service) createWatcher(ctx context.Context, r *http.Request, req *watchRequest) (*createWatcherResponse, error) {
	_, p, err := s.resolve(r, req.Path)
	if err != nil {
		return nil, err
	}
	w, err := newWatch(p, req)
	if err != nil {
		return nil, err
	}
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	pw := &polled{w: w}
	s.watchers.mu.Lock()
	s.watchers.m[id] = pw
	s.watchers.mu.Unlock()
	go pw.collect()
	return &createWatcherResponse{WatcherID: id}, nil
}

func (pw *polled) collect() {
	for {
		select {
		case ev, ok := <-pw.w.w.Events:
			if !ok {
				return
			}
			evs := pw.w.convert(ev)
			pw.mu.Lock()
			if len(pw.events)+len(evs) <= maxBuffered {
				pw.events = append(pw.events, evs...)
			}
			pw.mu.Unlock()
		case err, ok := <-pw.w.w.Errors:
			if !ok {
				return
			}
			pw.mu.Lock()
			pw.err = err
			pw.mu.Unlock()
		}
	}
}

func (s *Service) lookupWatcher(id string) (*polled, error) {
	s.watchers.mu.Lock()
	defer s.watchers.mu.Unlock()
	pw, ok := s.watchers.m[id]
	if !ok {
		return nil, connect.Errorf(connect.NotFound, "watcher %q not found", id)
	}
	return pw, nil
}

func (s *Service) getWatcherEvents(ctx context.Context, r *http.Request, req *watcherRequest) (*watcherEventsResponse, error) {
	pw, err := s.lookupWatcher(req.WatcherID)
	if err != nil {
		return nil, err
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if err := pw.err; err != nil {
		// Reported once (e.g. a queue overflow); the watcher keeps going.
		pw.err = nil
		return nil, connect.Errorf(connect.Internal, "watcher %s lost events: %v", req.WatcherID, err)
	}
	evs := pw.events
	pw.events = nil
	if evs == nil {
		evs = []Event{}
	}
	return &watcherEventsResponse{Events: evs}, nil
}

func (s *Service) removeWatcher(ctx context.Context, r *http.Request, req *watcherRequest) (*empty, error) {
	s.watchers.mu.Lock()
	pw, ok := s.watchers.m[req.WatcherID]
	delete(s.watchers.m, req.WatcherID)
	s.watchers.mu.Unlock()
	if !ok {
		return nil, connect.Errorf(connect.NotFound, "watcher %q not found", req.WatcherID)
	}
	pw.w.close()
	return &empty{}, nil
}
