// Package store defines the durable state of the control plane: teams, API
// keys and sandboxes. The contract is Store; implementations live in
// sub-packages (sqlite) and run the shared conformance suite in storetest.
package store

import (
	"context"
	"time"
)

// Team owns sandboxes, API keys and webhooks.
type Team struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// SandboxState is the lifecycle state persisted for a sandbox.
type SandboxState string

const (
	StateRunning SandboxState = "running"
	StatePaused  SandboxState = "paused"
	StateKilled  SandboxState = "killed"
)

// Sandbox is the persisted record of one sandbox. Its runtime handle (driver,
// network namespace) is stored too so a restarted server can reattach.
type Sandbox struct {
	ID            string
	TeamID        string
	TemplateID    string
	BuildID       string
	Alias         string
	State         SandboxState
	Metadata      map[string]string
	EnvVars       map[string]string
	CPUCount      int
	MemoryMB      int
	DiskMB        int
	StartedAt     time.Time
	EndAt         time.Time
	KilledAt      time.Time
	KillReason    string
	AccessToken   string
	AllowInternet bool
	AutoPause     bool
	ExecutionID   string
	Runtime       string // driver name that runs it
	NetNS         string // network namespace path ("" = none)
}

// Change is a state change recorded in the same transaction as the row
// update, so its event is durable exactly when the change is.
type Change struct {
	Type    string // event type, e.g. "sandbox.lifecycle.created"
	Sandbox Sandbox
	Data    map[string]any
}

// Recorder writes a Change inside the store's transaction. The store passes
// its implementation-specific transaction handle (for sqlite a *sql.Tx).
type Recorder interface {
	RecordTx(ctx context.Context, tx any, c Change) error
	// Committed is called after the transaction carrying changes committed.
	Committed()
}

// ListFilter selects sandboxes of one team.
type ListFilter struct {
	TeamID   string
	States   []SandboxState // empty = running and paused
	Metadata map[string]string
	After    string // cursor: list sandboxes ordered after this one
	Limit    int
}

// Store is the control plane's durable state. Methods return errors
// wrapping errdefs categories (ErrNotFound, ErrAlreadyExists, ...).
type Store interface {
	// CreateTeam creates a team with its first API key (stored hashed).
	CreateTeam(ctx context.Context, name, apiKey string) (Team, error)
	// TeamByAPIKey resolves an API key.
	TeamByAPIKey(ctx context.Context, apiKey string) (Team, error)
	// TeamByName finds a team by its unique name.
	TeamByName(ctx context.Context, name string) (Team, error)
	// Teams lists all teams.
	Teams(ctx context.Context) ([]Team, error)

	// InsertSandbox stores a new sandbox and records change (created/resumed).
	InsertSandbox(ctx context.Context, sb Sandbox, change *Change) error
	// UpdateSandbox replaces a sandbox row and records change.
	UpdateSandbox(ctx context.Context, sb Sandbox, change *Change) error
	// Sandbox returns one sandbox by ID (any team, any state).
	Sandbox(ctx context.Context, id string) (Sandbox, error)
	// ListSandboxes lists a team's sandboxes ordered by start time, newest first.
	ListSandboxes(ctx context.Context, f ListFilter) ([]Sandbox, error)
	// LiveSandboxes lists every sandbox not killed, of all teams (restart recovery).
	LiveSandboxes(ctx context.Context) ([]Sandbox, error)

	Close() error
}
