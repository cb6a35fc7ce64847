package placement

import (
	"fmt"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// NoFitError says why no node could take a request, by reason. Each node
// is counted once, under the first reason that rules it out, in this
// order: not the node the request is pinned to, excluded, draining or unhealthy, missing the snapshot, at its
// sandbox limit, short of memory and/or CPU (a node short of both counts
// under both).
//
// Its message names nodes and their failures (operator detail, for the
// log); PublicMessage, what a tenant is answered, gives the same reasons
// without node names, addresses or node errors.
type NoFitError struct {
	Request Request
	Nodes   int // nodes in the snapshot

	Elsewhere  int // not Request.Node, the one node that holds the request's data
	Excluded   int // named in Request.Exclude after a failed attempt
	Draining   int
	Unhealthy  int
	NoSnapshot int // lacked the snapshot, which is not in the blob store
	AtLimit    int // at their sandbox limit

	Schedulable           int // reached the capacity check
	NoMemory              int
	LargestFreeMemoryMiB  int64 // among the nodes short of memory
	LargestFreeMemoryNode string
	NoCPU                 int
	LargestFreeCPUMillis  int64 // among the nodes short of CPU
	LargestFreeCPUNode    string

	// Set by Placer.Run: the attempts that failed on nodes, and, when
	// every allowed attempt failed, how many were allowed.
	Failures []Failure
	Attempts int
}

func (e *NoFitError) Error() string {
	return "cannot place sandbox: " + strings.Join(e.reasons(false), "; ")
}

// PublicMessage is Error without what only operators should see: which
// node, at what address, failed how.
func (e *NoFitError) PublicMessage() string {
	return "cannot place sandbox: " + strings.Join(e.reasons(true), "; ") + ": " + e.Hint()
}

func (e *NoFitError) reasons(public bool) []string {
	on := func(node string) string {
		if public {
			return ""
		}
		return " on " + node
	}
	if e.Attempts > 0 {
		n := "the only attempt failed"
		if e.Attempts > 1 {
			n = fmt.Sprintf("all %d attempts failed", e.Attempts)
		}
		if public {
			return []string{n}
		}
		return []string{fmt.Sprintf("%s (%s)", n, e.failures())}
	}
	if e.Nodes == 0 {
		return []string{"no nodes registered"}
	}
	var out []string
	if e.Request.Node != "" && e.Elsewhere == e.Nodes {
		// The one node that could take it is not in the cluster.
		pinned := "the node that holds " + e.pinnedBy()
		if !public {
			pinned += " (" + e.Request.Node + ")"
		}
		return []string{pinned + " is not in the cluster (gone, or never started)"}
	}
	if e.Request.Node != "" {
		who := "only one node"
		if !public {
			who = "only " + e.Request.Node
		}
		out = append(out, who+" holds "+e.pinnedBy())
	}
	if e.NoMemory > 0 {
		if e.NoMemory == e.Schedulable {
			out = append(out, fmt.Sprintf("no node has %d MiB memory free (largest free: %d MiB%s)",
				e.Request.MemoryMiB, e.LargestFreeMemoryMiB, on(e.LargestFreeMemoryNode)))
		} else {
			out = append(out, fmt.Sprintf("%s %d MiB memory free (largest free among them: %d MiB%s)",
				count(e.NoMemory, "node lacks", "nodes lack"), e.Request.MemoryMiB, e.LargestFreeMemoryMiB, on(e.LargestFreeMemoryNode)))
		}
	}
	if e.NoCPU > 0 {
		if e.NoCPU == e.Schedulable {
			out = append(out, fmt.Sprintf("no node has %d millicores CPU free (largest free: %d millicores%s)",
				e.Request.CPUMillis, e.LargestFreeCPUMillis, on(e.LargestFreeCPUNode)))
		} else {
			out = append(out, fmt.Sprintf("%s %d millicores CPU free (largest free among them: %d millicores%s)",
				count(e.NoCPU, "node lacks", "nodes lack"), e.Request.CPUMillis, e.LargestFreeCPUMillis, on(e.LargestFreeCPUNode)))
		}
	}
	if e.AtLimit > 0 {
		out = append(out, count(e.AtLimit, "node at its sandbox limit", "nodes at their sandbox limit"))
	}
	if e.NoSnapshot > 0 {
		out = append(out, fmt.Sprintf("snapshot %s is not in the blob store and %s it",
			e.Request.SnapshotID, count(e.NoSnapshot, "available node lacks", "available nodes lack")))
	}
	if e.Draining > 0 {
		out = append(out, count(e.Draining, "node draining", "nodes draining"))
	}
	if e.Unhealthy > 0 {
		out = append(out, count(e.Unhealthy, "node unhealthy", "nodes unhealthy"))
	}
	if e.Excluded > 0 {
		s := count(e.Excluded, "excluded after failure", "excluded after failure")
		if len(e.Failures) > 0 && !public {
			s += " (" + e.failures() + ")"
		}
		out = append(out, s)
	}
	return out
}

func (e *NoFitError) pinnedBy() string {
	if e.Request.PinnedBy != "" {
		return e.Request.PinnedBy
	}
	return "the sandbox's data"
}

func (e *NoFitError) failures() string {
	parts := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		parts[i] = f.String()
	}
	return strings.Join(parts, "; ")
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// Kind is the errdefs category: ErrResourceExhausted when some usable
// node lacked room (asking for less, or waiting for sandboxes to end,
// helps), ErrUnavailable when no node was usable at all (nodes down,
// draining or without the snapshot: retrying later helps).
func (e *NoFitError) Kind() error {
	if e.NoMemory+e.NoCPU+e.AtLimit > 0 || e.Attempts > 0 {
		return errdefs.ErrResourceExhausted
	}
	return errdefs.ErrUnavailable
}

// Is makes errors.Is(err, errdefs.ErrResourceExhausted) (or
// ErrUnavailable) hold for the error's Kind.
func (e *NoFitError) Is(target error) bool { return target == e.Kind() }

// Hint says what the caller can do about it.
func (e *NoFitError) Hint() string {
	switch {
	case e.Attempts > 0:
		return "nodes are failing to start sandboxes: check the nodes' logs, then retry"
	case e.Nodes == 0:
		return "start at least one node (sbx serve --role node) and check that it reaches the database"
	case e.Request.Node != "" && e.Elsewhere == e.Nodes:
		return "bring that node back: what it holds does not move to another node (create a new volume elsewhere otherwise)"
	case e.Request.Node != "" && e.NoMemory+e.NoCPU+e.AtLimit > 0:
		return "the sandbox can only run on the node that holds " + e.pinnedBy() + ", which is full: end idle sandboxes there, or ask for less CPU or memory"
	case e.Request.Node != "":
		return "the sandbox can only run on the node that holds " + e.pinnedBy() + ", which takes no sandboxes right now: bring it back or undrain it"
	case e.NoMemory+e.NoCPU > 0:
		return "ask for less CPU or memory, end idle sandboxes, or add nodes"
	case e.AtLimit > 0:
		return "end idle sandboxes or add nodes"
	case e.NoSnapshot > 0:
		return "the node holding the snapshot is down or draining: bring it back, or keep snapshots in a shared blob store"
	default:
		return "no node is taking sandboxes right now: retry shortly, and check the nodes' heartbeats"
	}
}
