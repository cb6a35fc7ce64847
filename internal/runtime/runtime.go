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
	// Owned gives root in the sandbox ownership of Source and everything
	// under it, for directories the sandbox writes (its run dir, a build's
	// scratch dir). Where root in a sandbox is an unprivileged host user
	// (user namespaces), it could not write there otherwise. Start changes
	// the owners without following symbolic links, before the sandbox
	// runs; files the host adds later must be given to the sandbox's root
	// (IDMapper) or be readable by others.
	Owned bool
	// IDMapped binds Source (a directory whose files carry the ids the
	// sandbox sees: 0 is its root) through an idmapped mount where the
	// sandbox runs in a user namespace, writable, nosuid and nodev: a
	// volume shared by sandboxes of different id ranges.
	IDMapped bool
}

// Resources are the cgroup limits of one sandbox.
type Resources struct {
	CPUs     float64 // vCPUs (quota/period); 0 = unlimited
	MemoryMB int     // memory limit (and memory+swap limit); 0 = unlimited
	PidsMax  int     // max tasks; 0 = unlimited
	DiskMB   int     // size of the writable layer; 0 = driver default
	// Background starts the sandbox with the least CPU weight among the
	// sandboxes (a warm pool's: nobody waits for it yet), so the sandboxes
	// users wait for win the CPU while it starts; Prioritizer.Foreground
	// gives it the normal weight. Only Start reads it: it is not part of
	// what a sandbox is restored with.
	Background bool
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
	// NetNSWait, when set, gives NetNS once that namespace exists: the
	// caller makes it while the driver prepares the root filesystem, and
	// the driver waits for it before it first uses the namespace. An error
	// from it ends the start. Only Start reads it; it is never saved.
	NetNSWait func() (string, error) `json:"-"`
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

// Stopper is implemented by drivers that can end every process of a
// sandbox at once, cheaply, leaving its resources (root filesystem,
// cgroup, runtime state) for Delete: a kill can then answer as soon as
// nothing runs in the sandbox any more and reclaim the rest after.
type Stopper interface {
	// Stop sends SIGKILL to the sandbox's init; in the sandbox's own PID
	// namespace that ends every process in it. Stopping a sandbox whose
	// init already ended is not an error; an unknown sandbox is
	// ErrNotFound. A paused sandbox must be resumed first.
	Stop(ctx context.Context, id string) error
}

// Prioritizer is implemented by drivers that can start a sandbox in the
// background (Resources.Background).
type Prioritizer interface {
	// Foreground gives a sandbox started in the background the normal CPU
	// weight; a sandbox already there is left as it is. An unknown sandbox
	// is ErrNotFound.
	Foreground(ctx context.Context, id string) error
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

// IDMap is the host range a sandbox's user namespace maps its user and
// group ids 0..Size-1 to: root inside is host uid UID and gid GID.
type IDMap struct {
	UID, GID, Size uint32
}

// IDMapper is implemented by drivers that can run sandboxes in user
// namespaces, where root inside is an unprivileged host user.
type IDMapper interface {
	// IDMap returns the sandbox's range; ok is false when the sandbox has
	// no user namespace (root inside is host root). It fails with
	// ErrNotFound for an unknown sandbox.
	IDMap(ctx context.Context, id string) (m IDMap, ok bool, err error)
}

// Reasons an Exit carries.
const (
	// ExitOOM: the kernel's OOM killer killed a process of the sandbox
	// (it reached its memory limit, which its writable layer counts
	// against when that lives in memory) before its init ended.
	ExitOOM = "oom"
	// ExitExited: the init process ended for any other reason.
	ExitExited = "exited"
)

// Exit says why a sandbox's init process ended.
type Exit struct {
	Reason string // ExitOOM or ExitExited
	// Code is the init's exit status as a shell reports it (128+n when
	// killed by signal n), or -1 when the kernel could not tell.
	Code int
}

// ExitWatcher is implemented by drivers that can tell when a sandbox's
// init process ends, including sandboxes started by an earlier process of
// the server.
type ExitWatcher interface {
	// Wait blocks until the init process that the latest Start or Restore
	// of sandbox id started has ended, and says why; it returns at once if
	// it has already ended. It cannot tell an exit its caller caused
	// (Delete, Checkpoint) from one it did not: callers ignore exits of
	// sandboxes they are stopping. It fails with ErrNotFound for an unknown
	// sandbox, with an errdefs.ErrFailedPrecondition error when no init is
	// running (a checkpointed sandbox), and with ctx.Err() when ctx ends
	// first. Memory and disk stay held until Delete.
	Wait(ctx context.Context, id string) (Exit, error)
}

// LayerCapturer is implemented by drivers that can save what a sandbox
// wrote to its root filesystem as an image layer (template builds).
type LayerCapturer interface {
	// CaptureLayer copies the writable layer of sandbox id into dst, which
	// must not exist: the files the sandbox created or changed, with
	// overlayfs whiteouts and opaque directories, owners as the image sees
	// them (ids a user namespace moved on the host are moved back), modes,
	// timestamps and extended attributes. The sandbox should not be writing
	// meanwhile.
	CaptureLayer(ctx context.Context, id, dst string) error
}
