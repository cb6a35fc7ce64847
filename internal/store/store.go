// Package store defines the durable state of the control plane: teams, API
// keys and sandboxes. The contract is Store; its implementation (sqlstore,
// on SQLite or PostgreSQL through sqldb) runs the conformance suite in
// storetest against both databases.
package store

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Team owns sandboxes, API keys and webhooks.
type Team struct {
	ID        string
	Name      string
	CreatedAt time.Time
	// MaxSandboxes overrides the server's per-team cap on running and
	// paused sandboxes (sbx serve --team-max-sandboxes): nil = the
	// server's default, 0 = no cap. Only the admin sets it.
	MaxSandboxes *int
}

// APIKey is an API key as it is listed: its value is stored only as a hash
// and never shown again after creation; Mask identifies it to people.
type APIKey struct {
	ID        string // stable identifier (UUID), for revocation
	TeamID    string // "" for the admin key
	Name      string
	Mask      KeyMask
	CreatedAt time.Time
	LastUsed  time.Time // zero: never used (updated at most once a minute)
}

// KeyMask is E2B's IdentifierMaskingDetails: enough of a key to tell keys
// apart (prefix, length, first and last characters), never enough to use it.
type KeyMask struct {
	Prefix       string // the key type, e.g. "e2b_"
	ValueLength  int    // length of the key after the prefix
	MaskedPrefix string // first characters after the prefix
	MaskedSuffix string // last characters
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
	// NodeID names the server that runs the sandbox, among servers sharing
	// a database ("" in rows from before nodes: adopted by the first
	// server that recovers them).
	NodeID string
}

// Change is a state change recorded in the same transaction as the row
// update, so its event is durable exactly when the change is.
type Change struct {
	Type    string // event type, e.g. "sandbox.lifecycle.created"
	Sandbox Sandbox
	Data    map[string]any
}

// Recorder writes a Change inside the store's transaction, so the change's
// event commits exactly when the row does.
type Recorder interface {
	RecordTx(ctx context.Context, tx *sqldb.Tx, c Change) error
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
	// Ascending lists oldest first (E2B's order=asc); the default is
	// newest first.
	Ascending bool
	// StartedAfter and StartedBefore bound the start time (zero = open).
	StartedAfter, StartedBefore time.Time
	// Template keeps the sandboxes of one template, named by ID or alias.
	Template string
}

// KeysChannel is the notification channel on which a store sharing its
// database with other servers announces that API keys were revoked (a key
// deleted, a team deleted, the admin key replaced): each server drops the
// keys it has cached (see sqldb.DB.Listen).
const KeysChannel = "sbx_keys"

// BudgetLimits is a team's stored budget (package budget's Limits).
type BudgetLimits struct {
	MaxConcurrent   int
	MaxDailyCreates int
	MaxDailySpend   float64
	MaxMonthlySpend float64
	WarnAtPercent   float64
	Action          string
}

// Count is one row of a grouped count: a team, a label (state, status)
// and how many.
type Count struct {
	Team  string
	Label string
	N     float64
}

// Refinement is a stored refinement: package refine's result as a JSON
// document, with the fields it is found by.
type Refinement struct {
	ID        string
	TeamID    string
	Status    string
	StartedAt time.Time
	Result    []byte // JSON
}

// Store is the control plane's durable state. Methods return errors
// wrapping errdefs categories (ErrNotFound, ErrAlreadyExists, ...).
type Store interface {
	// CreateTeam creates a team with its first API key (stored hashed).
	CreateTeam(ctx context.Context, name, apiKey string) (Team, error)
	// TeamByAPIKey resolves a team's API key (not the admin key).
	TeamByAPIKey(ctx context.Context, apiKey string) (Team, error)
	// TeamByName finds a team by its unique name.
	TeamByName(ctx context.Context, name string) (Team, error)
	// Team finds a team by ID (ErrNotFound if it does not exist).
	Team(ctx context.Context, id string) (Team, error)
	// Teams lists all teams, oldest first.
	Teams(ctx context.Context) ([]Team, error)
	// SetTeamMaxSandboxes sets a team's cap override (nil = server default).
	SetTeamMaxSandboxes(ctx context.Context, teamID string, max *int) error
	// DeleteTeam deletes a team and all its API keys. Its sandboxes, events
	// and templates are left to their owners (the caller kills sandboxes).
	DeleteTeam(ctx context.Context, teamID string) error

	// CreateAPIKey adds a key to a team; apiKey is stored hashed.
	CreateAPIKey(ctx context.Context, teamID, name, apiKey string) (APIKey, error)
	// APIKeys lists a team's keys ("" = every team's), oldest first.
	APIKeys(ctx context.Context, teamID string) ([]APIKey, error)
	// APIKey returns one key by ID (ErrNotFound if it does not exist).
	APIKey(ctx context.Context, id string) (APIKey, error)
	// RenameAPIKey changes a key's name.
	RenameAPIKey(ctx context.Context, id, name string) error
	// DeleteAPIKey revokes a key. Unless force, it refuses (ErrConflict) to
	// delete a team's last key, which would lock the team out.
	DeleteAPIKey(ctx context.Context, id string, force bool) error
	// ResolveAPIKey finds whose key apiKey is: a team's (Team set) or the
	// admin's (admin true, Team zero). ErrNotFound for any other value.
	ResolveAPIKey(ctx context.Context, apiKey string) (key APIKey, team Team, admin bool, err error)
	// TouchAPIKey records that a key was used at t.
	TouchAPIKey(ctx context.Context, id string, t time.Time) error
	// SetAdminKey makes apiKey the only admin key (first start, rotation).
	SetAdminKey(ctx context.Context, apiKey string) (APIKey, error)

	// InsertSandbox stores a new sandbox and records change (created/resumed).
	InsertSandbox(ctx context.Context, sb Sandbox, change *Change) error
	// UpdateSandbox replaces a sandbox row and records change.
	UpdateSandbox(ctx context.Context, sb Sandbox, change *Change) error
	// Sandbox returns one sandbox by ID (any team, any state).
	Sandbox(ctx context.Context, id string) (Sandbox, error)
	// ListSandboxes lists a team's sandboxes ordered by start time, newest first.
	ListSandboxes(ctx context.Context, f ListFilter) ([]Sandbox, error)
	// LiveSandboxes lists every sandbox not killed, of all teams and nodes.
	LiveSandboxes(ctx context.Context) ([]Sandbox, error)
	// NodeSandboxes lists the sandboxes not killed that node runs, and
	// those of no node (rows from before nodes), for its restart recovery:
	// a server never touches another's sandboxes.
	NodeSandboxes(ctx context.Context, node string) ([]Sandbox, error)

	Close() error
}
