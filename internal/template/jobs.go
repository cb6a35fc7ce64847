package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// Jobs makes builds cluster jobs (sbx serve --role api|node; docs/cluster-storage.md
// "Template builds as jobs"): a started build is queued in the database,
// whichever api replica took the call, and exactly one node claims it,
// builds it, publishes its layers to the blob store and records its status
// and log in the database, where every replica reads them. A node that dies
// mid-build stops renewing its claim; when the claim runs out another node
// claims the build and runs it from the start.
type Jobs struct {
	Queue store.BuildJobs
	// Node claims builds under this name; "" queues only (an api replica).
	Node string
	// Lease is how long a claim holds without renewal (renewed every
	// third of it); 0 = 30 s.
	Lease time.Duration
	// Poll is how often an idle node looks for builds; 0 = 1 s.
	Poll time.Duration
	// MaxClaims ends a build in error once it was claimed this often (it
	// keeps killing the nodes that try it); 0 = 3.
	MaxClaims int
}

// SetJobs makes Start queue builds and, when j.Node is set, Load start the
// loop that claims and runs them. Call before Load (and, on an api
// replica, which never calls Load, before serving).
func (s *Service) SetJobs(j *Jobs) {
	if j.Lease == 0 {
		j.Lease = 30 * time.Second
	}
	if j.Poll == 0 {
		j.Poll = time.Second
	}
	if j.MaxClaims == 0 {
		j.MaxClaims = 3
	}
	s.jobs = j
}

// queue checks a build's start request as far as a replica without the
// layers can and queues it for a node.
func (s *Service) queue(ctx context.Context, teamID string, rec Record, b BuildRecord, req StartRequest) error {
	err := s.checkQueued(ctx, teamID, rec.ID, req)
	if err == nil {
		err = s.templateBusy(ctx, rec.ID, b.ID)
	}
	if err != nil {
		if !errors.Is(err, errdefs.ErrConflict) {
			b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, errdefs.Message(err), "base", s.now().UTC()
			if uerr := s.store.UpdateBuild(ctx, b); uerr != nil {
				s.log.Error("record rejected build", "build.id", b.ID, "err", uerr)
			}
		}
		return err
	}
	if err := s.jobs.Queue.QueueBuild(ctx, b.ID, mustJSON(req)); err != nil {
		return err
	}
	b.Status = StatusBuilding
	s.event(ctx, EventBuildStarted, rec, b, nil)
	return nil
}

// checkQueued is validateStart for a replica that may hold none of the
// template's layers: uploads are looked up in the database, a base
// template by its row (the claiming node resolves and pulls it).
func (s *Service) checkQueued(ctx context.Context, teamID, templateID string, req StartRequest) error {
	if len(req.Steps) > 200 {
		return errdefs.Invalid("%d steps are too many (at most 200); combine RUN steps", len(req.Steps))
	}
	for i, st := range req.Steps {
		if !st.HasFiles() {
			continue
		}
		if ok, err := s.uploadPresent(ctx, teamID, st.FilesHash); err != nil {
			return err
		} else if !ok {
			return errdefs.Invalid("files of step %d (%s) were not uploaded; upload them via GET /templates/%s/files/%s first",
				i+1, st, templateID, st.FilesHash)
		}
	}
	ref := req.base()
	name := builder.TemplateBase(ref)
	if name == "" {
		name = ref
	}
	// As resolveBase: built-in templates and the team's own (not another
	// team's, public or not).
	if t, ok := s.reg.Get(name); ok && (t.TeamID == "" || t.TeamID == teamID) {
		return nil
	}
	rec, err := s.store.Template(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		rec, _ = s.findByName(ctx, strings.ToLower(name))
	} else if err != nil {
		return err
	}
	if rec.ID != "" && rec.CurrentBuild != "" && rec.TeamID == teamID {
		return nil
	}
	if req.FromTemplate != "" {
		return errdefs.Invalid("base template %q not found; use base, code-interpreter or a template listed by `sbx template list`", ref)
	}
	return nil // an image: the node pulls it when the build runs
}

// templateBusy refuses a second build of a template while one runs on any
// node (the one-box check is the running map; here it is the database).
func (s *Service) templateBusy(ctx context.Context, templateID, buildID string) error {
	bs, err := s.store.Builds(ctx, templateID)
	if err != nil {
		return err
	}
	for _, o := range bs {
		if o.ID != buildID && o.Status == StatusBuilding {
			return errdefs.Conflict("template %s is being built already (build %s); wait for it to finish", templateID, o.ID)
		}
	}
	return nil
}

// runJobs is a node's claim loop: while it has a free build slot it claims
// the oldest claimable build and runs it.
func (s *Service) runJobs(ctx context.Context) {
	if n, err := s.jobs.Queue.ReleaseBuilds(ctx, s.jobs.Node); err != nil {
		s.log.Error("release the builds this node held before it restarted", "err", err)
	} else if n > 0 {
		s.log.Warn("builds this node held before it restarted put back in the queue", "count", n)
	}
	for {
		if s.idle() && s.claimOne(ctx) {
			continue // maybe more are waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.jobs.Poll):
		}
	}
}

// idle reports whether this node runs fewer builds than it may.
func (s *Service) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running) < s.cfg.MaxBuilds
}

// decodeStored reads a queued build's start request.
func decodeStored(raw []byte, req *StartRequest) error {
	if err := json.Unmarshal(raw, req); err != nil {
		return fmt.Errorf("the queued build's start request is unreadable: %w", err)
	}
	return nil
}

// claimOne claims a build and starts it in the background; false when
// there was none.
func (s *Service) claimOne(ctx context.Context) bool {
	now := s.now()
	job, ok, err := s.jobs.Queue.ClaimBuild(ctx, s.jobs.Node, now, now.Add(s.jobs.Lease))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("claim a template build", "err", err)
		}
		return false
	}
	if !ok {
		return false
	}
	b := job.Build
	rec, err := s.store.Template(ctx, b.TemplateID)
	if err != nil {
		s.log.Error("template of a claimed build", "build.id", b.ID, "err", err)
		rec = Record{ID: b.TemplateID}
		s.fail(rec, b, "base", fmt.Errorf("template %s of the build is gone: %w", b.TemplateID, err))
		return true
	}
	var req StartRequest
	if err := decodeStored(b.Request, &req); err != nil {
		s.fail(rec, b, "base", err)
		return true
	}
	log := func(msg string) {
		_ = s.store.AppendBuildLog(context.WithoutCancel(ctx), b.ID, LogEntry{Timestamp: s.now().UTC(), Level: "info", Step: "base", Message: msg})
	}
	if job.Claims > s.jobs.MaxClaims {
		s.fail(rec, b, "base", errdefs.Unavailable("the build was claimed %d times by nodes that stopped before finishing it; "+
			"check the nodes' logs (a step that exhausts a node?) and start the build again", job.Claims-1))
		return true
	}
	if job.Claims > 1 {
		log(fmt.Sprintf("node %s builds again from the start: the node that held the build stopped renewing its claim (attempt %d)",
			s.jobs.Node, job.Claims))
	} else {
		log("claimed by node " + s.jobs.Node)
	}
	jctx, cancel := context.WithCancel(s.buildCtx)
	s.mu.Lock()
	s.running[rec.ID] = b.ID
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.done(rec.ID)
		defer s.takeCancelled(b.ID)
		defer cancel()
		go s.renew(jctx, cancel, b.ID)
		base, err := s.resolveBase(jctx, rec.TeamID, req)
		if err != nil {
			s.fail(rec, b, "base", err)
			return
		}
		s.run(jctx, rec, b, req, base)
	}()
	return true
}

// renew holds the claim while the build runs; a lost claim (this node was
// too slow to renew and another node took the build) cancels the build.
func (s *Service) renew(ctx context.Context, cancel context.CancelFunc, buildID string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.jobs.Lease / 3):
		}
		err := s.jobs.Queue.RenewBuildClaim(ctx, buildID, s.jobs.Node, s.now().Add(s.jobs.Lease))
		if errors.Is(err, store.ErrBuildCancelled) {
			s.log.Info("build cancelled by the admin; stopping it here", "build.id", buildID)
			s.markCancelled(buildID)
			cancel()
			return
		}
		if errors.Is(err, store.ErrClaimLost) {
			s.log.Warn("build claimed by another node; stopping it here", "build.id", buildID)
			cancel()
			return
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("renew the claim of a build (retrying)", "build.id", buildID, "err", err)
		}
	}
}

// record stores a build's outcome: as the holder of its claim for a job
// (store.ErrClaimLost when another node holds it now), else as is.
func (s *Service) record(ctx context.Context, b BuildRecord) error {
	if s.jobs != nil && s.jobs.Node != "" {
		return s.jobs.Queue.FinishBuild(ctx, b, s.jobs.Node)
	}
	return s.store.UpdateBuild(ctx, b)
}

// claimHeld checks that this node still holds a job's claim (always nil
// for a build that is not a job): store.ErrClaimLost when another node
// holds it, store.ErrBuildCancelled when the admin cancelled it.
func (s *Service) claimHeld(ctx context.Context, buildID string) error {
	if s.jobs == nil || s.jobs.Node == "" {
		return nil
	}
	return s.jobs.Queue.RenewBuildClaim(ctx, buildID, s.jobs.Node, s.now().Add(s.jobs.Lease))
}

// CurrentBuild describes a team template's current build for placement
// (an api replica sizes the sandbox by it and prefers nodes holding its
// layers): ok is false for a template the team may not start, one not
// built yet, or a tag other than the default.
func (s *Service) CurrentBuild(ctx context.Context, teamID, ref string) (Template, bool, error) {
	name, tag := SplitRef(ref)
	if tag != "" && tag != DefaultTag {
		return Template{}, false, nil
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	rec, err := s.store.Template(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		var ok bool
		if rec, ok = s.findByName(ctx, strings.ToLower(name)); !ok {
			return Template{}, false, nil
		}
	} else if err != nil {
		return Template{}, false, err
	}
	if rec.CurrentBuild == "" || (rec.TeamID != teamID && !rec.Public) {
		return Template{}, false, nil
	}
	return Template{ID: rec.ID, BuildID: rec.CurrentBuild, TeamID: rec.TeamID, CPUCount: rec.CPUCount, MemoryMB: rec.MemoryMB}, true, nil
}

// releaseOnShutdown puts a job this node is stopping with (the service is
// closing: the process shuts down) back in the queue instead of failing
// it: another node, or this one restarted, builds it.
func (s *Service) releaseOnShutdown(ctx context.Context, b BuildRecord) bool {
	if s.jobs == nil || s.jobs.Node == "" || s.buildCtx.Err() == nil {
		return false
	}
	if _, err := s.jobs.Queue.ReleaseBuilds(ctx, s.jobs.Node); err != nil {
		s.log.Error("put the builds of a node shutting down back in the queue", "err", err)
		return false
	}
	s.log.Info("build stopped by the shutdown; put back in the queue", "build.id", b.ID)
	return true
}
