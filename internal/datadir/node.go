package datadir

import "path/filepath"

// The node side's entries (the sandbox manager's, and the dirs the wiring
// hands to the runtime driver, the network and the volumes). IDs and keys
// reach these functions validated (sandbox IDs match the manager's ID
// pattern, snapshot keys are digests): they are joined, not checked.

// Agent holds envd and codeinterp, bind-mounted read-only at /.sbx/bin in
// every sandbox (shared: mode 0755).
func (l Layout) Agent() string { return l.path("agent") }

// SandboxRun is run/<id>: the sandbox's envd socket dir.
func (l Layout) SandboxRun(id string) string { return filepath.Join(l.Root, "run", id) }

// AgentKey is agent-keys/<id>: the key the envd of a sandbox started by an
// earlier sbx proves it holds (sbx now keeps it in the sandbox's Spec).
func (l Layout) AgentKey(id string) string { return filepath.Join(l.Root, "agent-keys", id) }

// BootID is boot-ids/<id>: the sandbox's /proc/sys/kernel/random/boot_id.
func (l Layout) BootID(id string) string { return filepath.Join(l.Root, "boot-ids", id) }

// SandboxLayers is sandbox-layers: the filesystems of sandboxes' earlier
// boots (pause without memory), one dir per sandbox (SandboxLayersOf).
func (l Layout) SandboxLayers() string { return l.path("sandbox-layers") }

// SandboxLayersOf is sandbox-layers/<id>.
func (l Layout) SandboxLayersOf(id string) string { return filepath.Join(l.SandboxLayers(), id) }

// Checkpoint is checkpoints/<id>: a sandbox paused to disk (spec and the
// driver's state).
func (l Layout) Checkpoint(id string) string { return filepath.Join(l.Root, "checkpoints", id) }

// Spec is specs/<id>.json: the runtime spec a sandbox was started with.
func (l Layout) Spec(id string) string { return filepath.Join(l.Root, "specs", id+".json") }

// TemplateSnapshots is snapshots: one dir per template snapshot key
// (TemplateSnapshot).
func (l Layout) TemplateSnapshots() string { return l.path("snapshots") }

// TemplateSnapshot is snapshots/<key>.
func (l Layout) TemplateSnapshot(key string) string { return filepath.Join(l.TemplateSnapshots(), key) }

// SandboxSnapshots is sandbox-snapshots: snapshots users take of their
// sandboxes, one dir per snapshot.
func (l Layout) SandboxSnapshots() string { return l.path("sandbox-snapshots") }

// RuntimeState is runtime/<name>: a runtime driver's state dir.
func (l Layout) RuntimeState(runtime string) string { return filepath.Join(l.Root, "runtime", runtime) }

// Sandboxes is sandboxes: the main driver's sandbox dirs (rootfs, config);
// SandboxesOf(runtime) those of a second driver (sandboxes-<runtime>).
func (l Layout) Sandboxes() string { return l.path("sandboxes") }

// SandboxesOf is sandboxes-<runtime>, a second driver's sandbox dirs.
func (l Layout) SandboxesOf(runtime string) string { return l.path("sandboxes-" + runtime) }

// Netns holds the sandboxes' named network namespaces.
func (l Layout) Netns() string { return l.path("netns") }

// Images caches pulled registry images (template builds).
func (l Layout) Images() string { return l.path("images") }

// Volumes holds the teams' volumes.
func (l Layout) Volumes() string { return l.path("volumes") }
