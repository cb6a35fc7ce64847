package codeinterp

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// DefaultKeepalive is how long a stream may stay silent before a
// keepalive line is sent (E2B's server uses 5 s), so proxies and clients
// with idle timeouts keep the connection open during long computations.
const DefaultKeepalive = 5 * time.Second

// Output lines of the /execute NDJSON stream (protocol doc §4.2).
type (
	lineExecutionCount struct {
		Type           string `json:"type"` // number_of_executions
		ExecutionCount int    `json:"execution_count"`
	}
	lineStream struct {
		Type      string `json:"type"` // stdout, stderr
		Text      string `json:"text"`
		Timestamp string `json:"timestamp"`
	}
	lineError struct {
		Type      string `json:"type"` // error
		Name      string `json:"name"`
		Value     string `json:"value"`
		Traceback string `json:"traceback"`
	}
	lineType struct {
		Type string `json:"type"` // keepalive, end_of_execution
	}
)

// emitter receives the lines of one execution, in order.
type emitter interface {
	emit(line any)
}

// resultDelay is how long a run's main result may wait unflushed for the
// end of the run to go with it.
const resultDelay = 2 * time.Millisecond

// ndjson writes lines to an HTTP response, flushing each one immediately
// (no buffering: a print must reach the client while the code runs), and
// sends keepalives during silences.
type ndjson struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	last    time.Time
	enc     *json.Encoder
	failed  bool
	closed  bool // the handler is returning: w is no longer ours
	pending bool // written but not flushed
	timer   *time.Timer
	stopped chan struct{}
}

func newNDJSON(w http.ResponseWriter, keepalive time.Duration) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	n := &ndjson{w: w, rc: http.NewResponseController(w), last: time.Now(), enc: json.NewEncoder(w), stopped: make(chan struct{})}
	n.enc.SetEscapeHTML(false)
	go n.keepalive(keepalive)
	return n
}

func (n *ndjson) emit(line any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failed || n.closed {
		return
	}
	// Encoder.Encode appends the newline that delimits NDJSON records.
	if err := n.enc.Encode(line); err != nil {
		n.failed = true
		return
	}
	// number_of_executions always comes right before the run's first
	// output, so it rides along with that line's flush: one write (and one
	// chunk through each proxy hop) fewer per run. The keepalive ticker
	// flushes it during a long silent run.
	if _, countOnly := line.(lineExecutionCount); countOnly {
		n.pending = true
		return
	}
	// The main result comes from the cell's last expression, when the run
	// is all but over: it waits up to resultDelay for end_of_execution, so
	// a short run's whole answer leaves in one write, one chunk through
	// each hop, instead of two. A run that goes on (post-run hooks,
	// figures shown after it) gets it at the next line or the timer.
	if isMainResult(line) {
		n.pending = true
		if n.timer == nil {
			n.timer = time.AfterFunc(resultDelay, n.flushPending)
		} else {
			n.timer.Reset(resultDelay)
		}
		return
	}
	if err := n.rc.Flush(); err != nil {
		n.failed = true
	}
	n.pending = false
	n.last = time.Now()
}

func isMainResult(line any) bool {
	m, ok := line.(map[string]any)
	return ok && m["is_main_result"] == true
}

// flushPending sends what waits unflushed, unless the handler is done.
func (n *ndjson) flushPending() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.pending || n.failed || n.closed {
		return
	}
	if err := n.rc.Flush(); err != nil {
		n.failed = true
	}
	n.pending = false
	n.last = time.Now()
}

func (n *ndjson) keepalive(interval time.Duration) {
	t := time.NewTicker(interval / 5)
	defer t.Stop()
	for {
		select {
		case <-n.stopped:
			return
		case <-t.C:
			n.mu.Lock()
			silent := time.Since(n.last) >= interval
			if n.pending && !n.failed && !n.closed {
				if err := n.rc.Flush(); err != nil {
					n.failed = true
				}
				n.pending = false
			}
			n.mu.Unlock()
			if silent {
				n.emit(lineType{Type: "keepalive"})
			}
		}
	}
}

// close writes end_of_execution, which is always the last line. It is not
// flushed here: the handler returns right after, and net/http then sends
// it together with the end of the chunked body in one write.
//
// After close the keepalive goroutine and the result timer leave w alone
// (a timer already firing waits for the lock, then sees closed).
func (n *ndjson) close() {
	close(n.stopped)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.timer != nil {
		n.timer.Stop()
	}
	if !n.failed && !n.closed {
		_ = n.enc.Encode(lineType{Type: "end_of_execution"})
	}
	n.closed = true
}

// mimeFields maps Jupyter MIME types to E2B result fields
// (code-interpreter template/server/api/models/result.py).
var mimeFields = map[string]string{
	"text/plain":             "text",
	"text/html":              "html",
	"text/markdown":          "markdown",
	"image/svg+xml":          "svg",
	"image/png":              "png",
	"image/jpeg":             "jpeg",
	"application/pdf":        "pdf",
	"text/latex":             "latex",
	"application/json":       "json",
	"application/javascript": "javascript",
	"e2b/data":               "data",
	"e2b/chart":              "chart",
}

// resultLine converts the data bundle of an execute_result or display_data
// message into a `result` line. Known MIME types become fields, the rest go
// to `extra`; text/plain loses surrounding quotes as E2B does ('y' → y).
func resultLine(data map[string]json.RawMessage, isMain bool) map[string]any {
	out := map[string]any{"type": "result", "is_main_result": isMain}
	extra := map[string]json.RawMessage{}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, mime := range keys {
		raw := data[mime]
		field, known := mimeFields[mime]
		if !known {
			extra[mime] = raw
			continue
		}
		switch field {
		case "json", "data", "chart":
			out[field] = raw
		default:
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				// Some kernels send multi-line text as a list of strings.
				var parts []string
				if json.Unmarshal(raw, &parts) != nil {
					extra[mime] = raw
					continue
				}
				for _, p := range parts {
					s += p
				}
			}
			if field == "text" {
				s = stripQuotes(s)
			}
			out[field] = s
		}
	}
	if len(extra) > 0 {
		out["extra"] = extra
	}
	return out
}

func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// translator turns one execution's iopub messages into stream lines.
type translator struct {
	out       emitter
	sawError  bool
	execCount int
}

func (t *translator) onIOPub(m *jupyter.Message) {
	switch m.Header.MsgType {
	case "execute_input":
		var c struct {
			ExecutionCount int `json:"execution_count"`
		}
		_ = json.Unmarshal(m.Content, &c)
		t.execCount = c.ExecutionCount
		t.out.emit(lineExecutionCount{Type: "number_of_executions", ExecutionCount: c.ExecutionCount})
	case "stream":
		var c struct{ Name, Text string }
		_ = json.Unmarshal(m.Content, &c)
		typ := "stdout"
		if c.Name == "stderr" {
			typ = "stderr"
		}
		t.out.emit(lineStream{Type: typ, Text: c.Text, Timestamp: timestamp(m.Header.Date)})
	case "execute_result", "display_data", "update_display_data":
		var c struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(m.Content, &c)
		t.out.emit(resultLine(c.Data, m.Header.MsgType == "execute_result"))
	case "error":
		var c struct {
			EName     string   `json:"ename"`
			EValue    string   `json:"evalue"`
			Traceback []string `json:"traceback"`
		}
		_ = json.Unmarshal(m.Content, &c)
		t.sawError = true
		t.out.emit(errorLine(c.EName, c.EValue, c.Traceback))
	}
}

func errorLine(name, value string, traceback []string) lineError {
	tb := ""
	for i, l := range traceback {
		if i > 0 {
			tb += "\n"
		}
		tb += l
	}
	return lineError{Type: "error", Name: name, Value: value, Traceback: tb}
}

func timestamp(date string) string {
	if date != "" {
		return date
	}
	return time.Now().UTC().Format(time.RFC3339Nano)
}
