package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/sdk"
)

// configFile is the small per-directory template config `sbx template init`
// writes and `sbx template build` reads and updates (E2B's e2b.toml keys).
const configFile = "e2b.toml"

func newTemplateCmd() *cobra.Command {
	opts := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "template",
		Aliases: []string{"tpl"},
		Short:   "Build templates from Dockerfiles and manage them",
		Long: `Templates are root filesystems sandboxes start from. Write an e2b.Dockerfile
(FROM base or e2bdev/code-interpreter, then RUN, COPY, ENV, WORKDIR, USER, CMD), build it
with 'sbx template build', and start sandboxes from the printed template ID or name.
Every RUN and COPY step is a cached layer: an unchanged rebuild takes well under a second.`,
	}
	opts.register(cmd)
	cmd.AddCommand(newTemplateInitCmd(), newTemplateBuildCmd(opts), newTemplateListCmd(opts), newTemplateDeleteCmd(opts),
		newTemplateTagCmd(opts), newTemplateTagsCmd(opts), newTemplateUntagCmd(opts), newBenchTemplatesCmd(opts, "bench"),
		newTemplatePublishCmd(opts, true), newTemplatePublishCmd(opts, false), newTemplateBuildLogsCmd(opts))
	return cmd
}

const initDockerfile = `# sbx template: build with 'sbx template build'.
# Debian packages install fastest; pip works when the build has internet access.
FROM base

RUN apt-get update && apt-get install -y --no-install-recommends python3-requests \
    && rm -rf /var/lib/apt/lists/*

# COPY files from this directory (.dockerignore is honoured):
# COPY app/ /home/user/app/

# Run as the sandbox user in its home directory:
USER user
WORKDIR /home/user

# Optional start command, started in every sandbox from this template:
# CMD ["python3", "-m", "http.server", "8000"]
`

func newTemplateInitCmd() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write an e2b.Dockerfile and " + configFile + " to start a template",
		Example: `  mkdir my-template && cd my-template && sbx template init --name my-template
  sbx template build`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			df := filepath.Join(dir, "e2b.Dockerfile")
			if _, err := os.Stat(df); err == nil {
				return fmt.Errorf("%s exists already; edit it and run 'sbx template build'", df)
			}
			if name == "" {
				name = defaultTemplateName(dir)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(df, []byte(initDockerfile), 0o644); err != nil {
				return err
			}
			cfg := templateConfig{"template_name": name, "dockerfile": "e2b.Dockerfile", "cpu_count": "2", "memory_mb": "1024"}
			if err := cfg.write(filepath.Join(dir, configFile)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote %s and %s (template %q).\nEdit the Dockerfile, then run: sbx template build\n",
				df, filepath.Join(dir, configFile), name)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "path", ".", "directory to write into")
	cmd.Flags().StringVar(&name, "name", "", "template name (default: the directory's name)")
	return cmd
}

var nonName = regexp.MustCompile(`[^a-z0-9._-]+`)

func defaultTemplateName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-"), "-._")
	if n == "" {
		n = "my-template"
	}
	return n
}

// templateConfig is a flat key = "value" file (a TOML subset).
type templateConfig map[string]string

func readTemplateConfig(path string) (templateConfig, error) {
	cfg := templateConfig{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("%s line %d: want key = \"value\"", path, n)
		}
		v = strings.TrimSpace(v)
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		cfg[strings.TrimSpace(k)] = v
	}
	return cfg, sc.Err()
}

func (c templateConfig) write(path string) error {
	var b strings.Builder
	b.WriteString("# sbx / E2B template config\n")
	for _, k := range []string{"template_id", "template_name", "dockerfile", "start_cmd", "ready_cmd", "cpu_count", "memory_mb"} {
		if v, ok := c[k]; ok && v != "" {
			if k == "cpu_count" || k == "memory_mb" {
				fmt.Fprintf(&b, "%s = %s\n", k, v)
			} else {
				fmt.Fprintf(&b, "%s = %s\n", k, strconv.Quote(v))
			}
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type buildFlags struct {
	dir, dockerfile, name, startCmd, readyCmd string
	cpu, memoryMB                             int
	force, noCache, noSnapshot                bool
	buildArgs, tags                           []string
}

func newTemplateBuildCmd(opts *clientOptions) *cobra.Command {
	f := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build a template from e2b.Dockerfile (or Dockerfile) in the current directory",
		Long: `Build reads e2b.Dockerfile, else Dockerfile, from --path (default: the current
directory), uploads the files its COPY steps need, and builds the template on the server.
It prints every step (cached or not) with the elapsed time and ends with the template ID.
Building again with the same name makes a new build of the same template; sandboxes that
are running keep the build they started from.`,
		Example: `  sbx template build --name my-app
  sbx template build -c "python3 -m http.server 8000" --ready-cmd "curl -sf localhost:8000"
  sbx template build --path ./templates/data-science --cpu 4 --memory 4096
  sbx template build --name my-app --tag v2 --tag staging`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTemplateBuild(cmd.Context(), cmd.OutOrStdout(), opts, f, cmd.Flags().Changed)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "path", ".", "build context directory")
	fl.StringVarP(&f.dockerfile, "dockerfile", "f", "", "Dockerfile (default: e2b.Dockerfile, else Dockerfile, in --path)")
	fl.StringVarP(&f.name, "name", "n", "", "template name (default: "+configFile+"'s template_name, else the directory's name)")
	fl.StringVarP(&f.startCmd, "start-cmd", "c", "", "command started in every sandbox (default: the Dockerfile's CMD/ENTRYPOINT)")
	fl.StringVar(&f.readyCmd, "ready-cmd", "", "command polled until it exits 0 after the start command")
	fl.IntVar(&f.cpu, "cpu", 2, "vCPUs of sandboxes from this template")
	fl.IntVar(&f.memoryMB, "memory", 1024, "memory (MiB) of sandboxes from this template")
	fl.BoolVar(&f.noCache, "no-cache", false, "rebuild every step")
	fl.BoolVar(&f.noSnapshot, "no-snapshot", false, "run the start command when each sandbox starts, under the server's runtime, instead of restoring sandboxes from a snapshot taken under runsc (cheaper commands, slower start)")
	fl.StringArrayVar(&f.buildArgs, "build-arg", nil, "ARG value, KEY=VALUE (repeatable)")
	fl.StringArrayVarP(&f.tags, "tag", "t", nil, "tag the new build (repeatable); start sandboxes from it with NAME:TAG")
	return cmd
}

// apiCall is a control-plane request with the CLI's key.
func apiCall(ctx context.Context, c *http.Client, cfg sdk.Config, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(cfg.APIURL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", cfg.APIKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Message, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (o *clientOptions) rawConfig() (sdk.Config, *http.Client, error) {
	cfg := sdk.ConfigFromEnv()
	if o.apiURL != "" {
		cfg.APIURL = o.apiURL
	}
	if o.apiKey != "" {
		cfg.APIKey = o.apiKey
	}
	if cfg.APIURL == "" {
		cfg.APIURL = sdk.DefaultURL
	}
	if cfg.APIKey == "" {
		return cfg, nil, errors.New(`no API key: run 'eval "$(sbx env)"' to use the local server's key, or pass --api-key`)
	}
	return cfg, &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DialContext: dialWithHint}}, nil
}

func runTemplateBuild(ctx context.Context, w io.Writer, opts *clientOptions, f *buildFlags, changed func(string) bool) error {
	t0 := time.Now()
	c, err := opts.client()
	if err != nil {
		return err
	}
	tc, err := readTemplateConfig(filepath.Join(f.dir, configFile))
	if err != nil {
		return err
	}
	df := f.dockerfile
	if df == "" && tc["dockerfile"] != "" {
		df = filepath.Join(f.dir, tc["dockerfile"])
	}
	if df == "" {
		df = filepath.Join(f.dir, "e2b.Dockerfile")
		if _, err := os.Stat(df); err != nil {
			df = filepath.Join(f.dir, "Dockerfile")
		}
	}
	src, err := os.ReadFile(df)
	if err != nil {
		return fmt.Errorf("no Dockerfile: %w (write one with 'sbx template init' or pass --dockerfile)", err)
	}
	args, err := parsePairs("build-arg", f.buildArgs)
	if err != nil {
		return err
	}
	plan, err := builder.Parse(bytes.NewReader(src), builder.ParseOptions{BuildArgs: args})
	if err != nil {
		return fmt.Errorf("%s: %w", df, err)
	}
	for _, n := range plan.Warnings {
		fmt.Fprintf(w, "warning: %s\n", n)
	}
	for _, n := range plan.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	name := f.name
	if name == "" {
		name = tc["template_name"]
	}
	if name == "" {
		name = defaultTemplateName(f.dir)
	}
	cpu, mem := f.cpu, f.memoryMB
	if !changed("cpu") && tc["cpu_count"] != "" {
		cpu, _ = strconv.Atoi(tc["cpu_count"])
	}
	if !changed("memory") && tc["memory_mb"] != "" {
		mem, _ = strconv.Atoi(tc["memory_mb"])
	}
	startCmd, readyCmd := plan.StartCmd, f.readyCmd
	if f.startCmd != "" {
		startCmd = f.startCmd
	} else if tc["start_cmd"] != "" && startCmd == "" {
		startCmd = tc["start_cmd"]
	}
	if readyCmd == "" {
		readyCmd = tc["ready_cmd"]
	}

	// Hash every COPY step's files before talking to the server, so a
	// missing path fails here with the Dockerfile line.
	ig, err := builder.LoadIgnore(f.dir)
	if err != nil {
		return err
	}
	type upload struct {
		files []builder.ContextFile
		hash  string
	}
	uploads := map[int]upload{}
	for i, s := range plan.Steps {
		if !s.HasFiles() {
			continue
		}
		files, err := builder.CopyFiles(f.dir, s.Args[0], ig)
		if err != nil {
			return fmt.Errorf("%s line %d: %w", df, s.Line, err)
		}
		h, err := builder.FilesHash(f.dir, s, files)
		if err != nil {
			return err
		}
		plan.Steps[i].FilesHash = h
		uploads[i] = upload{files, h}
	}

	bo := sdk.TemplateBuildOptions{Name: name, Tags: f.tags, CPUCount: cpu, MemoryMB: mem,
		StartCmd: startCmd, ReadyCmd: readyCmd, Force: f.noCache, NoSnapshot: f.noSnapshot}
	if plan.FromImage {
		bo.FromImage = plan.From
	} else {
		bo.FromTemplate = builder.TemplateBase(plan.From)
	}
	for _, s := range plan.Steps {
		bo.Steps = append(bo.Steps, sdk.TemplateStep{Type: s.Type, Args: s.Args, FilesHash: s.FilesHash, Force: s.Force, Line: s.Line})
	}
	reg, err := c.RegisterTemplateBuild(ctx, bo)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Building template %s (%s), build %s\n", name, reg.TemplateID, reg.BuildID)
	for i := range plan.Steps {
		u, ok := uploads[i]
		if !ok {
			continue
		}
		var size int64
		for _, cf := range u.files {
			if cf.Info.Mode().IsRegular() {
				size += cf.Info.Size()
			}
		}
		fmt.Fprintf(w, "[%6.1fs] files for %s: %d entries, %.1f MiB\n", time.Since(t0).Seconds(), plan.Steps[i], len(u.files), float64(size)/(1<<20))
		if err := c.UploadTemplateFiles(ctx, reg.TemplateID, u.hash, contextArchive(f.dir, u.files)); err != nil {
			return fmt.Errorf("upload files of %s: %w", plan.Steps[i], err)
		}
	}
	if err := c.StartTemplateBuild(ctx, *reg, bo); err != nil {
		return err
	}
	if err := followBuild(ctx, w, c, *reg, t0); err != nil {
		return err
	}
	tc["template_id"], tc["template_name"] = reg.TemplateID, name
	if tc["dockerfile"] == "" {
		tc["dockerfile"] = filepath.Base(df)
	}
	tc["cpu_count"], tc["memory_mb"] = strconv.Itoa(cpu), strconv.Itoa(mem)
	if err := tc.write(filepath.Join(f.dir, configFile)); err != nil {
		fmt.Fprintf(w, "warning: could not update %s: %v\n", configFile, err)
	}
	fmt.Fprintf(w, "\nTemplate %s built in %s.\nTemplate ID: %s\n", name, time.Since(t0).Round(time.Millisecond), reg.TemplateID)
	fmt.Fprintf(w, "Start a sandbox: sbx sandbox create -t %s   (SDK: Sandbox.create('%s'))\n", name, name)
	return nil
}

// contextArchive spools files of the context to a temporary gzip tar for
// an upload: contexts can be large, and the upload needs an exact length.
func contextArchive(dir string, files []builder.ContextFile) func() (io.ReadCloser, int64, error) {
	return func() (io.ReadCloser, int64, error) {
		tmp, err := os.CreateTemp("", "sbx-context-*.tar.gz")
		if err != nil {
			return nil, 0, err
		}
		// Unlinked at once: the open file is all the upload needs.
		os.Remove(tmp.Name())
		if err := builder.WriteTar(tmp, dir, files); err != nil {
			tmp.Close()
			return nil, 0, err
		}
		size, err := tmp.Seek(0, io.SeekCurrent)
		if err == nil {
			_, err = tmp.Seek(0, io.SeekStart)
		}
		if err != nil {
			tmp.Close()
			return nil, 0, err
		}
		return tmp, size, nil
	}
}

// followBuild waits for a build and prints its log with elapsed time. A
// failed build's error is in the log already: the returned error only
// points at it, so it is printed once.
func followBuild(ctx context.Context, w io.Writer, c *sdk.Client, b sdk.TemplateBuild, t0 time.Time) error {
	logged := false
	err := c.WaitTemplateBuild(ctx, b, func(e sdk.BuildLogEntry) {
		fmt.Fprintf(w, "[%6.1fs] %s\n", time.Since(t0).Seconds(), e.Message)
		logged = logged || e.Level == "error"
	})
	var be *sdk.BuildError
	if errors.As(err, &be) && logged {
		return fmt.Errorf("build %s failed (the error is above)", b.BuildID)
	}
	return err
}

func newTemplateListCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the templates you can start sandboxes from",
		Example: `  sbx template list
  sbx template list --json | jq -r '.[].templateID'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, hc, err := opts.rawConfig()
			if err != nil {
				return err
			}
			var ts []map[string]any
			if err := apiCall(cmd.Context(), hc, cfg, http.MethodGet, "/templates", nil, &ts); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(ts)
			}
			tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TEMPLATE ID\tNAMES\tSTATUS\tCPU\tMEMORY MB\tBUILD ID")
			for _, t := range ts {
				var names []string
				if ns, ok := t["names"].([]any); ok {
					for _, n := range ns {
						names = append(names, fmt.Sprint(n))
					}
				}
				fmt.Fprintf(tw, "%v\t%s\t%v\t%v\t%v\t%v\n", t["templateID"], strings.Join(names, ","), t["buildStatus"],
					t["cpuCount"], t["memoryMB"], t["buildID"])
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTemplateDeleteCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "delete TEMPLATE...",
		Aliases: []string{"rm"},
		Short:   "Delete templates by ID or name (running sandboxes keep running)",
		Example: `  sbx template delete my-app`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, hc, err := opts.rawConfig()
			if err != nil {
				return err
			}
			var ts []struct {
				TemplateID string   `json:"templateID"`
				Names      []string `json:"names"`
			}
			if err := apiCall(cmd.Context(), hc, cfg, http.MethodGet, "/templates", nil, &ts); err != nil {
				return err
			}
			for _, ref := range args {
				id := ref
				for _, t := range ts {
					for _, n := range t.Names {
						if n == ref {
							id = t.TemplateID
						}
					}
				}
				if err := apiCall(cmd.Context(), hc, cfg, http.MethodDelete, "/templates/"+id, nil, nil); err != nil {
					return fmt.Errorf("delete template %s: %w", ref, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted template %s\n", ref)
			}
			return nil
		},
	}
}

// benchScenario is one row of the seed's "Cost & Performance Analysis"
// table: a workload run in a sandbox from a library template versus a plain
// base sandbox that installs the same Debian packages first.
type benchScenario struct {
	label, template, packages, workload string
}

var benchScenarios = []benchScenario{
	{"ML Code Gen", "ml", "python3-sklearn python3-numpy",
		`python3 -c "from sklearn.datasets import make_classification as m; from sklearn.linear_model import LogisticRegression as L; X,y=m(n_samples=2000,random_state=0); print('accuracy', L(max_iter=500).fit(X,y).score(X,y))"`},
	{"Data Science", "data-science", "python3-pandas python3-numpy python3-matplotlib",
		`python3 -c "import numpy as np, pandas as pd, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; df=pd.DataFrame(np.random.default_rng(0).normal(size=(10000,4)),columns=list('abcd')); print(df.describe().loc['mean']); df.plot(); plt.savefig('/tmp/p.png')"`},
	{"Web Dev", "web-dev", "python3-flask",
		`python3 -c "import flask; app=flask.Flask('b'); app.add_url_rule('/', 'i', lambda: 'ok'); print(app.test_client().get('/').data)"`},
}

// newBenchTemplatesCmd is both `sbx template bench` and `sbx bench templates`.
func newBenchTemplatesCmd(opts *clientOptions, use string) *cobra.Command {
	var only string
	cmd := &cobra.Command{
		Use:   use,
		Short: "Template vs no template: the seed's cost & performance table, measured here",
		Long: `For each scenario (ML, data science, web dev) this starts a sandbox from the library
template and runs the workload, then starts a plain base sandbox that first installs the same
Debian packages with apt-get and runs the workload, and prints both times. Build the library
templates first: sbx template build --path templates/<name> --name <name>.`,
		Example: `  sbx bench templates
  sbx template bench --only data-science`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			// The base template's 512 MiB are too little for apt-get to unpack
			// scikit-learn into the sandbox's memory-backed disk, so the
			// "without template" side runs on base with more memory.
			if err := ensureBenchBase(cmd.Context(), opts); err != nil {
				return fmt.Errorf("prepare %s: %w", benchBase, err)
			}
			tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "SCENARIO\tWITHOUT TEMPLATE\tWITH TEMPLATE\tSAVINGS")
			for _, sc := range benchScenarios {
				if only != "" && only != sc.template {
					continue
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "running %s ...\n", sc.label)
				with, err := benchRun(cmd.Context(), c, sc.template, "", sc.workload)
				if err != nil {
					return fmt.Errorf("%s with template %s: %w (build it: sbx template build --path templates/%s --name %s)",
						sc.label, sc.template, err, sc.template, sc.template)
				}
				install := "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends " + sc.packages + " >/dev/null"
				without, err := benchRun(cmd.Context(), c, benchBase, install, sc.workload)
				if err != nil {
					return fmt.Errorf("%s without template: %w", sc.label, err)
				}
				fmt.Fprintf(tw, "%s\t%.1fs install + %.1fs execute = %.1fs\t%.2fs startup + %.1fs execute = %.1fs\t%.0f%% faster\n",
					sc.label, without.install.Seconds(), without.exec.Seconds(), without.total().Seconds(),
					with.startup.Seconds(), with.exec.Seconds(), with.total().Seconds(),
					100*(1-with.total().Seconds()/without.total().Seconds()))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&only, "only", "", "run one scenario: ml, data-science or web-dev")
	return cmd
}

// benchBase is the base template with 4 GiB of memory (no steps).
const benchBase = "bench-base"

func ensureBenchBase(ctx context.Context, opts *clientOptions) error {
	c, err := opts.client()
	if err != nil {
		return err
	}
	_, err = c.BuildTemplate(ctx, sdk.TemplateBuildOptions{Name: benchBase, CPUCount: 2, MemoryMB: 4096, FromTemplate: "base"})
	return err
}

type benchTimes struct{ startup, install, exec time.Duration }

func (b benchTimes) total() time.Duration { return b.startup + b.install + b.exec }

func benchRun(ctx context.Context, c *sdk.Client, template, install, workload string) (benchTimes, error) {
	var bt benchTimes
	t0 := time.Now()
	sb, err := c.Create(ctx, sdk.CreateOptions{Template: template, Timeout: 10 * time.Minute})
	if err != nil {
		return bt, err
	}
	defer sb.Kill(context.WithoutCancel(ctx))
	bt.startup = time.Since(t0)
	run := func(cmd, user string) (time.Duration, error) {
		t := time.Now()
		res, err := sb.Commands.Run(ctx, cmd, sdk.RunOptions{User: user, Timeout: 10 * time.Minute})
		if err != nil {
			return 0, err
		}
		if res.ExitCode != 0 {
			return 0, fmt.Errorf("%q exited %d: %s", cmd, res.ExitCode, res.Stderr)
		}
		return time.Since(t), nil
	}
	if install != "" {
		if bt.install, err = run(install, "root"); err != nil {
			return bt, err
		}
	}
	bt.exec, err = run(workload, "")
	return bt, err
}
