package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// TemplateStep is one build instruction, in the E2B SDKs' layout:
//
//	RUN     [command, user?]
//	COPY    [src, dest, user or "", mode or ""] + FilesHash (upload with UploadTemplateFiles)
//	ENV     [k1, v1, k2, v2, ...]
//	WORKDIR [path]
//	USER    [name]
type TemplateStep struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash,omitempty"`
	Force     bool     `json:"force,omitempty"`
	// Line is the Dockerfile line the step came from (sbx extension): when
	// every step has one, sbx names steps by line in the build log.
	Line int `json:"line,omitempty"`
}

// TemplateBuildOptions describes a template build.
type TemplateBuildOptions struct {
	// Name names the template; building a name again makes a new build of
	// the same template.
	Name string
	// Tags tag the new build (start sandboxes from NAME:TAG).
	Tags []string
	// CPUCount and MemoryMB size the template's sandboxes (server default when 0).
	CPUCount, MemoryMB int
	// FromTemplate is the template to build on ("base" when both it and
	// FromImage are empty); FromImage an OCI image reference instead.
	FromTemplate, FromImage string
	Steps                   []TemplateStep
	// StartCmd runs in every sandbox of the template (snapshotted running
	// where the server can); ReadyCmd is polled until it exits 0.
	StartCmd, ReadyCmd string
	// Force rebuilds every step; NoSnapshot starts StartCmd in each
	// sandbox instead of restoring a snapshot (sbx extension).
	Force, NoSnapshot bool
	// OnLog receives each build log line as the build goes.
	OnLog func(BuildLogEntry)
}

// TemplateBuild identifies one build of a template.
type TemplateBuild struct {
	TemplateID string `json:"templateID"`
	BuildID    string `json:"buildID"`
}

// BuildLogEntry is a line of a build's log.
type BuildLogEntry struct {
	Timestamp time.Time `json:"timestamp"`
	Level     string    `json:"level"` // info, warn or error
	Step      string    `json:"step,omitempty"`
	Message   string    `json:"message"`
}

// BuildStatus is a build's state and the log lines from an offset on.
type BuildStatus struct {
	TemplateID string          `json:"templateID"`
	BuildID    string          `json:"buildID"`
	Status     string          `json:"status"` // waiting, building, ready or error
	LogEntries []BuildLogEntry `json:"logEntries"`
	Reason     *struct {
		Message string `json:"message"`
		Step    string `json:"step,omitempty"`
	} `json:"reason,omitempty"`
}

// BuildError is a failed template build. It matches ErrInvalidArgument
// with errors.Is: the Dockerfile, a step or the start command is wrong.
type BuildError struct {
	TemplateBuild
	Step    string // "base", "finalize" or a 1-based step index; "" if unknown
	Message string
}

func (e *BuildError) Error() string {
	if e.Step != "" {
		return fmt.Sprintf("build %s of template %s failed at step %s: %s", e.BuildID, e.TemplateID, e.Step, e.Message)
	}
	return fmt.Sprintf("build %s of template %s failed: %s", e.BuildID, e.TemplateID, e.Message)
}

// Is makes errors.Is(err, ErrInvalidArgument) true for a build error.
func (e *BuildError) Is(target error) bool { return target == ErrInvalidArgument }

// RegisterTemplateBuild creates the template (or a new build of an
// existing one with that name) and returns the IDs to upload files to and
// start the build with. BuildTemplate does all of it.
func (c *Client) RegisterTemplateBuild(ctx context.Context, opts TemplateBuildOptions) (*TemplateBuild, error) {
	if opts.Name == "" {
		return nil, fmt.Errorf("register template: %w: Name is required", ErrInvalidArgument)
	}
	body := map[string]any{"name": opts.Name}
	if len(opts.Tags) > 0 {
		body["tags"] = opts.Tags
	}
	if opts.CPUCount > 0 {
		body["cpuCount"] = opts.CPUCount
	}
	if opts.MemoryMB > 0 {
		body["memoryMB"] = opts.MemoryMB
	}
	var b TemplateBuild
	if _, err := c.apiDo(ctx, http.MethodPost, "/v3/templates", nil, body, &b); err != nil {
		return nil, fmt.Errorf("register template %q: %w", opts.Name, err)
	}
	return &b, nil
}

// UploadTemplateFiles uploads the gzip-compressed tar archive of a COPY
// step's files (hash is the step's FilesHash) unless the server has them
// already. open is called only then, and returns the archive and its exact
// length (presigned upload URLs need one).
func (c *Client) UploadTemplateFiles(ctx context.Context, templateID, hash string, open func() (io.ReadCloser, int64, error)) error {
	var st struct {
		Present bool   `json:"present"`
		URL     string `json:"url"`
	}
	path := "/templates/" + url.PathEscape(templateID) + "/files/" + url.PathEscape(hash)
	if _, err := c.apiDo(ctx, http.MethodGet, path, nil, nil, &st); err != nil {
		return fmt.Errorf("upload files %s: %w", hash, err)
	}
	if st.Present {
		return nil
	}
	archive, size, err := open()
	if err != nil {
		return fmt.Errorf("upload files %s: %w", hash, err)
	}
	defer archive.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, st.URL, io.NopCloser(archive))
	if err != nil {
		return fmt.Errorf("upload files %s: %w", hash, err)
	}
	req.ContentLength = size
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("upload files %s: %w", hash, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upload files %s: %w", hash, apiErrorFrom(resp))
	}
	return nil
}

// StartTemplateBuild starts a registered build.
func (c *Client) StartTemplateBuild(ctx context.Context, b TemplateBuild, opts TemplateBuildOptions) error {
	body := map[string]any{"steps": opts.Steps, "startCmd": opts.StartCmd, "readyCmd": opts.ReadyCmd, "force": opts.Force}
	if opts.Steps == nil {
		body["steps"] = []TemplateStep{}
	}
	switch {
	case opts.FromImage != "":
		body["fromImage"] = opts.FromImage
	case opts.FromTemplate != "":
		body["fromTemplate"] = opts.FromTemplate
	default:
		body["fromTemplate"] = "base"
	}
	if opts.NoSnapshot {
		body["noSnapshot"] = true
	}
	path := "/v2/templates/" + url.PathEscape(b.TemplateID) + "/builds/" + url.PathEscape(b.BuildID)
	if _, err := c.apiDo(ctx, http.MethodPost, path, nil, body, nil); err != nil {
		return fmt.Errorf("start build %s: %w", b.BuildID, err)
	}
	return nil
}

// TemplateBuildStatus returns a build's status and its log from logsOffset on.
func (c *Client) TemplateBuildStatus(ctx context.Context, b TemplateBuild, logsOffset int) (*BuildStatus, error) {
	path := "/templates/" + url.PathEscape(b.TemplateID) + "/builds/" + url.PathEscape(b.BuildID) + "/status"
	var st BuildStatus
	if _, err := c.apiDo(ctx, http.MethodGet, path, url.Values{"logsOffset": {strconv.Itoa(logsOffset)}}, nil, &st); err != nil {
		return nil, fmt.Errorf("build %s status: %w", b.BuildID, err)
	}
	return &st, nil
}

// WaitTemplateBuild polls a build until it ends, passing its log to onLog
// (may be nil). A failed build returns a *BuildError.
func (c *Client) WaitTemplateBuild(ctx context.Context, b TemplateBuild, onLog func(BuildLogEntry)) error {
	offset := 0
	for {
		st, err := c.TemplateBuildStatus(ctx, b, offset)
		if err != nil {
			return err
		}
		for _, e := range st.LogEntries {
			if onLog != nil {
				onLog(e)
			}
		}
		offset += len(st.LogEntries)
		if len(st.LogEntries) == 0 { // a finished build's log is complete once a page is empty
			switch st.Status {
			case "ready":
				return nil
			case "error":
				be := &BuildError{TemplateBuild: b, Message: "build failed"}
				if st.Reason != nil {
					be.Message, be.Step = st.Reason.Message, st.Reason.Step
				}
				return be
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for build %s: %w", b.BuildID, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// BuildTemplate registers, starts and waits for a build whose steps need
// no files (RUN, ENV, WORKDIR, USER; for COPY, register, upload with
// UploadTemplateFiles, then start). It returns the build once it is ready.
func (c *Client) BuildTemplate(ctx context.Context, opts TemplateBuildOptions) (*TemplateBuild, error) {
	for i, s := range opts.Steps {
		if s.FilesHash != "" {
			return nil, fmt.Errorf("build template: %w: step %d (%s) needs files: use RegisterTemplateBuild, UploadTemplateFiles and StartTemplateBuild",
				ErrInvalidArgument, i+1, s.Type)
		}
	}
	b, err := c.RegisterTemplateBuild(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := c.StartTemplateBuild(ctx, *b, opts); err != nil {
		return nil, err
	}
	if err := c.WaitTemplateBuild(ctx, *b, opts.OnLog); err != nil {
		var be *BuildError
		if errors.As(err, &be) {
			return b, err
		}
		return nil, err
	}
	return b, nil
}
