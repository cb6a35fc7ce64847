// Package runtime defines the contract between the sandbox manager and the
// programs that actually isolate a sandbox (OCI runtimes such as crun, runc
// and runsc). Each implementation lives in a sub-package and runs the shared
// conformance suite in runtimetest.
package runtime

import (
	"context"
	"errors"
	"os"
	"time"
)

// ErrNotFound is returned when the runtime knows no sandbox with the given ID.
var ErrNotFound = errors.New("runtime: sandbox not found")

// Mount is an extra bind mount into the sandbox.
type Mount struct {
	Source   string // host path
	Target   string // path inside the sandbox
	ReadOnly bool
}

// Resources are the cgroup limits of one sandbox.
type Resources struct {
	CPUs     float64 // vCPUs (quota/period); 0 = unlimited
	MemoryMB int     // memory limit (and memory+swap limit); 0 = unlimited
	PidsMax  int     // max tasks; 0 = unlimited
	DiskMB   int     // size of the writable layer; 0 = driver default
}

// Spec describes one sandbox to start.
type Spec struct {
	ID        string   // [a-z0-9]+, validated by the caller and again by the driver
	Lower     []string // read-only root filesystem layers, topmost first
	Hostname  string
	Args      []string // the init process (argv), run as root
	Env       []string // KEY=VALUE for the init process
	Cwd       string
	Mounts    []Mount
	Resources Resources
	// NetNS is the path of an existing network namespace to join.
	// Empty means a fresh namespace with loopback only (no outside network).
	NetNS string
	// HostSocket is the host path of a unix socket the init process binds
	// through a mount (runsc --host-uds=create), "" for none. gVisor cannot
	// checkpoint a socket bound on the host, so a Checkpointer sends the
	// init SIGUSR1 before a checkpoint and waits until the socket file is
	// gone, and sends SIGUSR2 after a restore so init binds it again.
	HostSocket string
}

// Status is what a runtime reports about a sandbox.
type Status string

const (
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
)

// Stats are cgroup counters of one sandbox.
type Stats struct {
	CPUUsage    time.Duration // total CPU time consumed
	MemoryBytes uint64        // current memory usage
	MemoryLimit uint64
	Pids        uint64
	DiskBytes   uint64 // bytes used in the writable layer
	// OOMKills counts processes the kernel killed for going over the
	// memory limit; PidsLimitHits counts forks refused at the pids limit.
	OOMKills      uint64
	PidsLimitHits uint64
}

// Driver starts, inspects and destroys sandboxes. All methods are safe for
// concurrent use with different IDs.
type Driver interface {
	// Name is the runtime's name ("crun", "runc", "runsc").
	Name() string
	// Start prepares the root filesystem (overlay of Spec.Lower plus a fresh
	// writable layer), creates and starts the sandbox, and returns once its
	// init process is running.
	Start(ctx context.Context, spec Spec) error
	// Delete kills every process of the sandbox, removes it from the runtime,
	// unmounts and removes its writable layer. Deleting an unknown sandbox
	// returns ErrNotFound.
	Delete(ctx context.Context, id string) error
	// State reports the sandbox's status, or ErrNotFound.
	State(ctx context.Context, id string) (Status, error)
	// List returns the IDs of every sandbox this driver knows, including ones
	// started by an earlier process of the server (used to reattach on restart).
	List(ctx context.Context) ([]string, error)
	// Stats reads the sandbox's cgroup counters.
	Stats(ctx context.Context, id string) (Stats, error)
}

// Output is implemented by drivers that keep what a sandbox's init process
// writes to its stdout and stderr in a host file the sandbox cannot reach
// (it is in neither its root filesystem nor a mount), bounded by the
// sandbox's disk limit. The host reads it without resolving any path a
// sandbox could have changed.
type Output interface {
	// OpenOutput opens that file for reading, from its start. It fails
	// with ErrNotFound for an unknown sandbox.
	OpenOutput(id string) (*os.File, error)
}

// Pauser is implemented by drivers that can freeze a sandbox in place.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// StatusCheckpointed is reported for a sandbox whose processes were saved to
// disk by Checkpointer.Checkpoint and not restored yet: nothing runs, its
// memory is freed, and Restore brings it back.
const StatusCheckpointed Status = "checkpointed"

// Checkpointer is implemented by drivers that can save a running sandbox to
// disk (processes, memory, open files and its writable layer) and restore
// it later, possibly after a restart of the server. The sandbox manager uses
// it for the disk tier of pause; a driver that implements the interface for
// some runtimes only reports which through CanCheckpoint.
type Checkpointer interface {
	// CanCheckpoint reports whether this driver's runtime can checkpoint.
	// When false, Checkpoint and Restore fail with ErrFailedPrecondition.
	CanCheckpoint() bool
	// Checkpoint saves the sandbox (paused or running) into dir, which must
	// not exist yet, and stops it, freeing its memory. The sandbox's network
	// namespace (Spec.NetNS) and bind-mount sources must stay in place until
	// Restore. On failure the sandbox keeps running (or stays paused).
	Checkpoint(ctx context.Context, id, dir string) error
	// Restore starts spec.ID from the checkpoint in dir with its processes
	// running. spec must describe the same mounts and network namespace as
	// the checkpointed sandbox. dir is left intact, so a failed restore can
	// be retried and the same checkpoint can be restored more than once.
	Restore(ctx context.Context, spec Spec, dir string) error
}
