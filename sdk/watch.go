package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// FilesystemEvent is a change in a watched directory.
type FilesystemEvent struct {
	// Name is the changed entry's path relative to the watched directory.
	Name string
	// Type is "create", "write", "remove", "rename" or "chmod".
	Type string
}

// WatchOptions configures Files.Watch.
type WatchOptions struct {
	// Recursive also watches subdirectories.
	Recursive bool
	// Timeout ends the watch after that long; zero means until Stop (or
	// ctx ends).
	Timeout time.Duration
}

// Watcher is a running directory watch.
type Watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// Stop ends the watch and waits until no more events are delivered.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

// Wait blocks until the watch ends and returns why: nil after Stop, the
// stream's error otherwise (ErrTimeout when WatchOptions.Timeout elapsed).
func (w *Watcher) Wait() error {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Watch calls onEvent for each change in the directory dir (E2B's
// files.watchDir) until Stop, ctx's end or the timeout. It returns once
// the watch is in place, so changes made after it returns are seen.
// onEvent is called from one goroutine, in order.
func (f *Files) Watch(ctx context.Context, dir string, onEvent func(FilesystemEvent), opts WatchOptions) (*Watcher, error) {
	if onEvent == nil {
		return nil, errors.New("watch: onEvent is required")
	}
	sctx, cancel := context.WithCancel(ctx)
	req := struct {
		Path      string `json:"path"`
		Recursive bool   `json:"recursive"`
	}{dir, opts.Recursive}
	o := f.opts()
	o.timeout = opts.Timeout
	st, err := f.sbx.openStream(sctx, "filesystem.Filesystem/WatchDir", req, o)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	// WatchDirResponse: its oneof is the message itself, not an "event".
	type watchEvent struct {
		Start      *struct{} `json:"start"`
		Filesystem *struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"filesystem"`
	}
	first, err := st.next()
	var ev watchEvent
	if err == nil {
		err = json.Unmarshal(first, &ev)
	}
	if err == nil && ev.Start == nil {
		err = fmt.Errorf("expected a start event first, got %s", first)
	}
	if err != nil {
		st.Close()
		cancel()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	w := &Watcher{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer st.Close()
		for {
			msg, err := st.next()
			if err != nil {
				if errors.Is(err, io.EOF) || sctx.Err() != nil && ctx.Err() == nil {
					err = nil // the stream's end, or Stop
				}
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			var ev watchEvent
			if err := json.Unmarshal(msg, &ev); err != nil || ev.Filesystem == nil {
				continue // keepalives
			}
			t := strings.ToLower(strings.TrimPrefix(ev.Filesystem.Type, "EVENT_TYPE_"))
			onEvent(FilesystemEvent{Name: ev.Filesystem.Name, Type: t})
		}
	}()
	return w, nil
}
