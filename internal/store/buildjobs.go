package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Job states of a template build (tpl_builds.job_state, migration 00120).
const (
	// JobNone: the build runs where it was accepted (one box).
	JobNone = ""
	// JobQueued: an api replica accepted it; no node holds it.
	JobQueued = "queued"
	// JobClaimed: a node builds it while its claim lasts.
	JobClaimed = "claimed"
	// JobDone: the claiming node recorded its outcome.
	JobDone = "done"
	// JobCancelling: the admin cancelled a claimed build; the claiming
	// node stops it at its next renewal and records it failed, or, when
	// the claim ran out first, the next claim attempt does (no migration:
	// job_state is free text).
	JobCancelling = "cancelling"
)

// BuildJob is a template build some node claimed.
type BuildJob struct {
	Build BuildRecord
	// Claims is how many times it was claimed, this claim included: more
	// than one means nodes holding it died (or stopped renewing).
	Claims     int
	ClaimUntil time.Time
}

// Upload is a team's files of one COPY step, kept in the blob store.
type Upload struct {
	TeamID    string
	FilesHash string // the client's hash of the step (64 hex)
	// BlobDigest names the files as a layer tar in the blob store.
	BlobDigest string
	// ContentDigest is the digest of what they unpack to; another upload
	// of the hash must match it.
	ContentDigest string
	Entries       int
	// Bytes is what they unpacked to (regular file content), counted
	// against the team's cap on the upload bytes it holds.
	Bytes     int64
	CreatedAt time.Time
}

// ErrClaimLost is wrapped when a node renews or finishes a build it no
// longer holds: its claim ran out and another node claimed the build. The
// node must drop what it built.
var ErrClaimLost = errors.New("the build's claim passed to another node")

// ErrBuildCancelled is wrapped when a node renews a build the admin
// cancelled while the node held it: the node stops it and records it
// failed with FinishBuild, which it still may.
var ErrBuildCancelled = errors.New("the build was cancelled by the admin")

// CancelledReason is the reason recorded for a build the admin cancelled.
const CancelledReason = "cancelled by the admin"

// BuildJobs is the queue of template builds that api replicas accept and
// nodes run (cluster roles), and the uploads those builds read. Every
// transition is one conditional update, so of several nodes claiming at
// once exactly one gets a build.
type BuildJobs interface {
	// QueueBuild moves build id from waiting to building as a queued job
	// no node holds, with its start request. It fails with
	// errdefs.ErrConflict unless the build is waiting (started once only).
	QueueBuild(ctx context.Context, id string, request json.RawMessage) error
	// ClaimBuild gives node the oldest queued build, or the oldest whose
	// claim ran out before now, held until until; ok is false when there
	// is none. The build's NodeID becomes node and its Claims grows by
	// one. Cancelled builds whose claim ran out end in error instead.
	ClaimBuild(ctx context.Context, node string, now, until time.Time) (job BuildJob, ok bool, err error)
	// RenewBuildClaim holds node's claim of build id until until; it wraps
	// ErrClaimLost when node no longer holds it, ErrBuildCancelled when it
	// does but the admin cancelled the build (the claim is still renewed).
	RenewBuildClaim(ctx context.Context, id, node string, until time.Time) error
	// FinishBuild stores a claimed build's status, reason, result and
	// finish time (as UpdateBuild) and ends the job, if node still holds
	// the claim; else it changes nothing and wraps ErrClaimLost.
	FinishBuild(ctx context.Context, b BuildRecord, node string) error
	// ReleaseBuilds puts the builds node holds back in the queue (a node
	// restarting: another node, or it, claims them again) and returns how
	// many. Those the admin cancelled meanwhile end in error instead.
	ReleaseBuilds(ctx context.Context, node string) (int64, error)
	// CancelBuild cancels build id if it is a job not finished: a queued
	// one ends in error with reason at at once (ended); a claimed one
	// becomes JobCancelling (requested), and its node, whose renewals
	// and FinishBuild still succeed, stops it. Neither for a build that
	// is not a running job (already finished, or not a job).
	CancelBuild(ctx context.Context, id, reason string, at time.Time) (ended, requested bool, err error)

	// PutUpload records u unless (team, hash) has an upload already, and
	// returns the one stored: u, or the earlier one.
	PutUpload(ctx context.Context, u Upload) (Upload, error)
	// Upload returns a team's upload of a files hash (errdefs.ErrNotFound).
	Upload(ctx context.Context, teamID, filesHash string) (Upload, error)
	// UploadBytes sums the Bytes of a team's uploads.
	UploadBytes(ctx context.Context, teamID string) (int64, error)
	// UploadsBefore returns up to limit uploads created before t, oldest
	// first.
	UploadsBefore(ctx context.Context, t time.Time, limit int) ([]Upload, error)
	// DeleteUpload deletes u's row if it is still the one recorded (same
	// team, hash and creation time). deleted reports whether this call
	// removed it, so of several processes pruning at once one acts on it;
	// orphan whether, once it is gone, no upload and no layer stack
	// (layer_blobs) names its blob any more, which may then be deleted.
	DeleteUpload(ctx context.Context, u Upload) (deleted, orphan bool, err error)
}
