package placement

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestRun(t *testing.T) {
	t.Parallel()
	// a is the freest, then b, then c: attempts go a, b, c.
	nodes := []Node{node("a", 8000, 8192), node("b", 8000, 8192, reserved(1000, 1024)), node("c", 8000, 8192, reserved(2000, 2048))}
	fails := func(on map[string]error) func(context.Context, Decision) error {
		return func(_ context.Context, d Decision) error { return on[d.NodeID] }
	}
	full := errdefs.Exhausted("node disk full")
	down := errdefs.Unavailable("node not answering")
	tests := []struct {
		name     string
		attempts int
		fail     map[string]error
		want     string // node, or the error message
		tried    []string
		wantKind error
	}{
		{"first node succeeds", 3, nil, "a", []string{"a"}, nil},
		{"a retryable failure moves on", 3, map[string]error{"a": full}, "b", []string{"a", "b"}, nil},
		{"a non-retryable failure stops", 3, map[string]error{"a": errdefs.Invalid("template broken")},
			"template broken", []string{"a"}, errdefs.ErrInvalidArgument},
		{"out of nodes", 5, map[string]error{"a": full, "b": down, "c": full},
			"cannot place sandbox: 3 excluded after failure (a: node disk full; b: node not answering; c: node disk full)",
			[]string{"a", "b", "c"}, errdefs.ErrUnavailable},
		{"out of attempts", 2, map[string]error{"a": full, "b": down},
			"cannot place sandbox: all 2 attempts failed (a: node disk full; b: node not answering)",
			[]string{"a", "b"}, errdefs.ErrResourceExhausted},
		{"one attempt", 1, map[string]error{"a": down},
			"cannot place sandbox: the only attempt failed (a: node not answering)", []string{"a"}, errdefs.ErrResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := placer(t, Config{K: 3}, nodes...)
			var tried []string
			r := req()
			r.Exclude = make([]string, 0, 8) // room to append: Run must not write into it
			d, err := p.Run(t.Context(), r, tt.attempts, func(ctx context.Context, d Decision) error {
				tried = append(tried, d.NodeID)
				return fails(tt.fail)(ctx, d)
			})
			if !slices.Equal(tried, tt.tried) {
				t.Fatalf("tried %v, want %v", tried, tt.tried)
			}
			if len(r.Exclude) != 0 || r.Exclude[:1][0] != "" { // [:1] reaches into the spare capacity
				t.Fatalf("Run changed the caller's Exclude: %v", r.Exclude[:cap(r.Exclude)])
			}
			if tt.wantKind == nil {
				if err != nil || d.NodeID != tt.want {
					t.Fatalf("Run = %s, %v; want %s", d.NodeID, err, tt.want)
				}
				return
			}
			if err == nil || err.Error() != tt.want || !errors.Is(err, tt.wantKind) {
				t.Fatalf("Run error\n got: %v\nwant: %s (%v)", err, tt.want, tt.wantKind)
			}
		})
	}
}

// TestRunReleases: every attempt's reservation is released when its
// create returns, so a node with room for one takes the next request.
func TestRunReleases(t *testing.T) {
	t.Parallel()
	p, _ := placer(t, Config{}, node("a", 1000, 1024))
	for range 3 {
		if _, err := p.Run(t.Context(), req(), 1, func(context.Context, Decision) error { return nil }); err != nil {
			t.Fatalf("Run on a node whose earlier reservation was released: %v", err)
		}
	}
}

// TestNoFitPublicMessage: what a tenant is answered (errdefs.Message)
// keeps the reasons and the hint but names no node, address or node
// error; the error itself, for the log, keeps them.
func TestNoFitPublicMessage(t *testing.T) {
	t.Parallel()
	dial := Failure{NodeID: "node-7.internal", Err: errors.New("dial tcp 10.0.0.7:3100: connection refused")}
	tests := []struct {
		name string
		err  *NoFitError
		want string
	}{
		{"attempts", &NoFitError{Attempts: 2, Failures: []Failure{dial, dial}},
			"cannot place sandbox: all 2 attempts failed: nodes are failing to start sandboxes"},
		{"excluded", &NoFitError{Nodes: 1, Excluded: 1, Failures: []Failure{dial}},
			"cannot place sandbox: 1 excluded after failure: no node is taking sandboxes"},
		{"memory", &NoFitError{Nodes: 1, Schedulable: 1, NoMemory: 1, Request: Request{MemoryMiB: 4096},
			LargestFreeMemoryMiB: 512, LargestFreeMemoryNode: "node-7.internal"},
			"cannot place sandbox: no node has 4096 MiB memory free (largest free: 512 MiB): ask for less"},
		{"cpu", &NoFitError{Nodes: 2, Schedulable: 2, NoCPU: 1, NoMemory: 1, Request: Request{CPUMillis: 2000},
			LargestFreeCPUMillis: 500, LargestFreeCPUNode: "node-7.internal", LargestFreeMemoryNode: "node-7.internal"},
			"1 node lacks 2000 millicores CPU free (largest free among them: 500 millicores): ask for less"},
		{"pinned node gone", &NoFitError{Nodes: 2, Elsewhere: 2, Request: Request{Node: "node-7.internal", PinnedBy: "volume data"}},
			"cannot place sandbox: the node that holds volume data is not in the cluster (gone, or never started): bring that node back"},
		{"pinned node draining", &NoFitError{Nodes: 2, Elsewhere: 1, Draining: 1, Request: Request{Node: "node-7.internal", PinnedBy: "volume data"}},
			"cannot place sandbox: only one node holds volume data; 1 node draining: the sandbox can only run on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := fmt.Errorf("create sandbox: %w", tt.err)
			pub := errdefs.Message(err)
			if !strings.Contains(pub, tt.want) {
				t.Errorf("public message %q does not contain %q", pub, tt.want)
			}
			for _, secret := range []string{"node-7", "10.0.0.7", "refused"} {
				if strings.Contains(pub, secret) {
					t.Errorf("public message %q names %q", pub, secret)
				}
			}
			if !strings.Contains(err.Error(), "node-7.internal") {
				t.Errorf("the logged error %q lost the node's name", err)
			}
		})
	}
}
