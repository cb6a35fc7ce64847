package template

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// DefaultTag designates a template's latest ready build, E2B's tag for
// "no tag". It is implicit: it always follows the latest build and cannot
// be assigned or removed.
const DefaultTag = "default"

// tagRE is Docker's tag syntax.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func checkTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return errdefs.Invalid("tag %q is invalid: use 1-128 characters A-Z, a-z, 0-9, '_', '.' and '-', not starting with '.' or '-'", tag)
	}
	return nil
}

// buildTags validates the tags a new build asks for (the tag of
// "name:tag" plus tags[]) and drops duplicates and "default", which every
// new build gets anyway once it is ready.
func buildTags(nameTag string, tags []string) ([]string, error) {
	all := tags
	if nameTag != "" {
		all = append([]string{nameTag}, tags...)
	}
	var out []string
	seen := map[string]bool{}
	for _, t := range all {
		if err := checkTag(t); err != nil {
			return nil, err
		}
		if t == DefaultTag || seen[t] {
			continue
		}
		seen[t] = true
		out = append(out, t)
	}
	return out, nil
}

// tagReadyBuild gives a build that just became ready the tags its request
// asked for.
func (s *Service) tagReadyBuild(ctx context.Context, rec Record, b BuildRecord, logLine func(step, level, msg string)) {
	if len(b.Tags) == 0 {
		return
	}
	if err := s.store.SetTemplateTags(ctx, rec.ID, b.ID, b.Tags, s.now().UTC()); err != nil {
		s.log.Error("tag build", "template.id", rec.ID, "build.id", b.ID, "err", err)
		logLine("finalize", "error", fmt.Sprintf("could not tag the build as %s: %v", strings.Join(b.Tags, ", "), err))
		return
	}
	logLine("finalize", "info", fmt.Sprintf("tagged build %s as %s", b.ID, strings.Join(b.Tags, ", ")))
}

// teamTemplate finds a team's template by ID or "[namespace/]name[:tag]".
// Built-in templates come back as builtin (they have one build and no tags);
// other teams' templates are not found, so their existence is not revealed.
func (s *Service) teamTemplate(ctx context.Context, teamID, ref string) (rec Record, builtin *Template, err error) {
	name, _ := SplitRef(ref)
	if t, ok := s.reg.Get(name); ok && t.TeamID == "" {
		return Record{}, &t, nil
	}
	if i := strings.LastIndex(name, "/"); i >= 0 { // namespace/name: sbx has one namespace per server
		name = name[i+1:]
	}
	rec, err = s.store.Template(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		var ok bool
		if rec, ok = s.findByName(ctx, strings.ToLower(name)); ok {
			err = nil
		}
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return Record{}, nil, err
	}
	if err != nil || rec.TeamID != teamID {
		return Record{}, nil, errdefs.NotFound("template %q not found; list your templates with `sbx template list`", name)
	}
	return rec, nil, nil
}

func displayName(rec Record) string {
	if len(rec.Names) > 0 {
		return rec.Names[0]
	}
	return rec.ID
}

// buildFor finds the build a tag of a template designates: "" and
// "default" the current build, an assigned tag its build, a build ID that
// build; "latest" is the current build unless it was assigned as a tag.
func (s *Service) buildFor(ctx context.Context, rec Record, tag string) (BuildRecord, error) {
	if tag == "" || tag == DefaultTag {
		if rec.CurrentBuild == "" {
			return BuildRecord{}, errdefs.Precondition("template %q has no ready build yet; wait for its build to finish", displayName(rec))
		}
		return s.store.Build(ctx, rec.CurrentBuild)
	}
	tr, err := s.store.TemplateTag(ctx, rec.ID, tag)
	if err == nil {
		return s.store.Build(ctx, tr.BuildID)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		return BuildRecord{}, err
	}
	if b, err := s.store.Build(ctx, tag); err == nil && b.TemplateID == rec.ID && b.Status == StatusReady {
		return b, nil
	}
	if tag == "latest" && rec.CurrentBuild != "" {
		return s.store.Build(ctx, rec.CurrentBuild)
	}
	return BuildRecord{}, s.unknownTag(ctx, rec, tag)
}

// unknownTag is the not-found error for a tag, naming the tags there are.
func (s *Service) unknownTag(ctx context.Context, rec Record, tag string) error {
	names := []string{DefaultTag}
	if trs, err := s.store.TemplateTags(ctx, rec.ID); err == nil {
		for _, tr := range trs {
			names = append(names, tr.Tag)
		}
	}
	return errdefs.NotFound("template %q has no tag %q; its tags are: %s (tag a build with `sbx template tag %s:%s NEWTAG` or Template.assignTags)",
		displayName(rec), tag, strings.Join(names, ", "), displayName(rec), DefaultTag)
}

// TaggedBuild resolves "name:tag" for the registry: the template as the
// build the tag designates, its layers mounted.
func (s *Service) TaggedBuild(ctx context.Context, t Template, tag string) (Template, error) {
	if t.TeamID == "" {
		if tag == "latest" {
			return t, nil
		}
		return Template{}, errdefs.NotFound("template %q has no tag %q; built-in templates have only the tag %q", t.ID, tag, DefaultTag)
	}
	rec, err := s.store.Template(ctx, t.ID)
	if err != nil {
		return Template{}, err
	}
	b, err := s.buildFor(ctx, rec, tag)
	if err != nil {
		return Template{}, err
	}
	if b.ID == t.BuildID {
		return t, nil
	}
	out, err := s.templateOf(ctx, rec, b, true)
	if err != nil {
		return Template{}, errdefs.Precondition("build %s (tag %q of template %q) cannot be started: %v; rebuild it",
			b.ID, tag, displayName(rec), err)
	}
	return out, nil
}

// AssignTags points tags at the build target ("name:tag", no tag = the
// latest build) designates and returns that build's ID and the tags.
func (s *Service) AssignTags(ctx context.Context, teamID, target string, tags []string) (string, []string, error) {
	if len(tags) == 0 {
		return "", nil, errdefs.Invalid("no tags to assign; pass at least one, e.g. {\"target\": \"my-template:v1\", \"tags\": [\"production\"]}")
	}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return "", nil, err
		}
		if t == DefaultTag {
			return "", nil, errdefs.Invalid("the tag %q always designates the latest build and cannot be assigned; use another tag", DefaultTag)
		}
	}
	_, tag := SplitRef(target)
	rec, builtin, err := s.teamTemplate(ctx, teamID, target)
	if err != nil {
		return "", nil, err
	}
	if builtin != nil {
		return "", nil, errdefs.Wrap(errdefs.ErrPermissionDenied, nil, "template %q is built in and cannot be tagged; build your own template FROM it", builtin.ID)
	}
	b, err := s.buildFor(ctx, rec, tag)
	if err != nil {
		return "", nil, err
	}
	// A build whose layers were pruned cannot start sandboxes: refuse to tag it.
	if _, err := s.templateOf(ctx, rec, b, true); err != nil {
		return "", nil, errdefs.Precondition("build %s of template %q cannot be tagged: %v; rebuild it",
			b.ID, displayName(rec), err)
	}
	out := dedupe(tags)
	if err := s.store.SetTemplateTags(ctx, rec.ID, b.ID, out, s.now().UTC()); err != nil {
		return "", nil, err
	}
	s.log.Info("template tags assigned", "template.id", rec.ID, "build.id", b.ID, "tags", out)
	return b.ID, out, nil
}

// RemoveTags removes tags of a team's template (by ID or name). Builds stay;
// sandboxes started from a removed tag keep running.
func (s *Service) RemoveTags(ctx context.Context, teamID, name string, tags []string) error {
	if len(tags) == 0 {
		return errdefs.Invalid("no tags to remove; pass at least one, e.g. {\"name\": \"my-template\", \"tags\": [\"staging\"]}")
	}
	for _, t := range tags {
		if t == DefaultTag {
			return errdefs.Invalid("the tag %q always designates the latest build and cannot be removed; delete the template instead", DefaultTag)
		}
	}
	rec, builtin, err := s.teamTemplate(ctx, teamID, name)
	if err != nil {
		return err
	}
	if builtin != nil {
		return errdefs.Wrap(errdefs.ErrPermissionDenied, nil, "template %q is built in and has no tags to remove", builtin.ID)
	}
	missing, err := s.store.RemoveTemplateTags(ctx, rec.ID, dedupe(tags))
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return errdefs.NotFound("nothing removed: %s", errdefs.Message(s.unknownTag(ctx, rec, missing[0])))
	}
	s.log.Info("template tags removed", "template.id", rec.ID, "tags", tags)
	return nil
}

// TagInfo is one entry of E2B's GET /templates/{templateID}/tags.
type TagInfo struct {
	Tag       string    `json:"tag"`
	BuildID   string    `json:"buildID"`
	CreatedAt time.Time `json:"createdAt"`
}

// Tags lists a template's tags, "default" (its latest build) first.
func (s *Service) Tags(ctx context.Context, teamID, ref string) ([]TagInfo, error) {
	rec, builtin, err := s.teamTemplate(ctx, teamID, ref)
	if err != nil {
		return nil, err
	}
	if builtin != nil {
		return []TagInfo{{Tag: DefaultTag, BuildID: builtin.BuildID, CreatedAt: builtin.CreatedAt}}, nil
	}
	out := []TagInfo{}
	if rec.CurrentBuild != "" {
		b, err := s.store.Build(ctx, rec.CurrentBuild)
		if err != nil {
			return nil, err
		}
		out = append(out, TagInfo{Tag: DefaultTag, BuildID: b.ID, CreatedAt: b.FinishedAt})
	}
	trs, err := s.store.TemplateTags(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	for _, tr := range trs {
		out = append(out, TagInfo{Tag: tr.Tag, BuildID: tr.BuildID, CreatedAt: tr.CreatedAt})
	}
	return out, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
