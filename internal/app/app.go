package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/monitor"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/refine"
	"github.com/sbxdev/sbx/internal/rootfs"
	"github.com/sbxdev/sbx/internal/runtime/oci"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlite"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/internal/webhook"
)

// NewAPIKey returns a fresh key in E2B's format: e2b_ + 40 lowercase hex.
func NewAPIKey() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return "e2b_" + hex.EncodeToString(b)
}

// OpenStore opens the data dir's database with the events recorder wired in.
func OpenStore(ctx context.Context, dataDir string, log *slog.Logger) (*sqlite.Store, *events.Log, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data dir: %w", err)
	}
	st, err := sqlite.Open(ctx, DBFile(dataDir), nil)
	if err != nil {
		return nil, nil, err
	}
	if err := events.Migrate(ctx, st.DB()); err != nil {
		st.Close()
		return nil, nil, err
	}
	evlog := events.NewLog(st.DB(), log)
	st.SetRecorder(recorder{evlog})
	return st, evlog, nil
}

// recorder turns store changes into events in the same transaction.
type recorder struct{ log *events.Log }

func (r recorder) RecordTx(ctx context.Context, tx any, c store.Change) error {
	t, ok := tx.(*sql.Tx)
	if !ok {
		return fmt.Errorf("events recorder needs a *sql.Tx, got %T", tx)
	}
	return r.log.AppendTx(ctx, t, &events.Event{
		Type: c.Type, TeamID: c.Sandbox.TeamID, SandboxID: c.Sandbox.ID,
		SandboxTemplateID: c.Sandbox.TemplateID, SandboxBuildID: c.Sandbox.BuildID,
		SandboxExecutionID: c.Sandbox.ExecutionID, EventData: c.Data,
	})
}

func (r recorder) Committed() { r.log.Notify() }

// EnsureFirstTeam creates the first team and its key file on first start.
func EnsureFirstTeam(ctx context.Context, st store.Store, dataDir string, log *slog.Logger) error {
	teams, err := st.Teams(ctx)
	if err != nil {
		return err
	}
	if len(teams) > 0 {
		return nil
	}
	key := NewAPIKey()
	if _, err := st.CreateTeam(ctx, "default", key); err != nil {
		return err
	}
	if err := os.WriteFile(APIKeyFile(dataDir), []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("write API key file: %w", err)
	}
	log.Info("created team \"default\" and its API key", "file", APIKeyFile(dataDir))
	return nil
}

// Run starts the server and blocks until ctx is cancelled.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var closers closerList
	// A closure: `defer closers.run(log)` would evaluate the (still empty)
	// list now and run none of the closers added below.
	defer func() { closers.run(log) }()

	st, evlog, err := OpenStore(ctx, cfg.DataDir, log)
	if err != nil {
		return err
	}
	closers.add("store", st.Close)
	if err := EnsureFirstTeam(ctx, st, cfg.DataDir, log); err != nil {
		return err
	}

	// Listen before the slow parts so /health answers within seconds.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	var handler http.Handler = starting{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("sbx listening", "addr", ln.Addr().String(), "data_dir", cfg.DataDir, "runtime", cfg.Runtime)

	agentDir, err := installAgent(cfg)
	if err != nil {
		return err
	}
	if err := oci.PrepareHost(log); err != nil {
		return fmt.Errorf("prepare host for sandboxes: %w", err)
	}
	drv, err := oci.New(oci.Config{Runtime: cfg.Runtime, ExtraArgs: cfg.RuntimeArgs,
		StateDir:   filepath.Join(cfg.DataDir, "runtime", cfg.Runtime),
		SandboxDir: filepath.Join(cfg.DataDir, "sandboxes")}, log)
	if err != nil {
		return err
	}
	netw, err := network.New(network.Config{NetnsDir: filepath.Join(cfg.DataDir, "netns")}, log)
	if err != nil {
		return err
	}
	reg := template.NewRegistry(log)
	mgr := sandbox.New(sandbox.Config{DataDir: cfg.DataDir, AgentDir: agentDir}, log, st, drv, netw, reg)
	mgr.SetPauseDiskAfter(cfg.PauseDiskAfter)
	if err := mgr.Recover(ctx); err != nil {
		return err
	}
	reg.PrepareBuiltins(ctx, rootfs.NewBuilder(cfg.RootfsCache, log))

	// Template builds (issue 5): Dockerfile steps run in build sandboxes;
	// built templates are re-registered from SQLite here.
	tplStore, err := template.NewStore(ctx, st.DB())
	if err != nil {
		return err
	}
	tplExec := builder.NewExecutor(builder.Config{DataDir: cfg.DataDir,
		SandboxDir: filepath.Join(cfg.DataDir, "sandboxes")}, log, drv, netw)
	tplSvc := template.NewService(template.ServiceConfig{DataDir: cfg.DataDir}, log, tplStore, reg, tplExec, evlog)
	tplSvc.SetImages(builder.NewImages(filepath.Join(cfg.DataDir, "images"), log))
	tplSvc.SetLiveSandboxes(st)
	if err := tplSvc.Load(ctx); err != nil {
		return err
	}
	closers.add("template builds", func() error { tplSvc.Close(); return nil })
	tplHandler := template.NewHandler(tplSvc)
	sizes, _ := cfg.PoolSizes() // validated above
	poolCtx, stopPools := context.WithCancel(context.WithoutCancel(ctx))
	mgr.StartPools(poolCtx, sizes)
	closers.add("warm pools", func() error {
		stopPools()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		mgr.Close(cctx)
		return nil
	})

	engine, err := webhook.NewEngine(st.DB(), evlog, webhook.Config{
		AllowPrivate: cfg.Webhooks.AllowPrivate, AllowCIDRs: cfg.Webhooks.AllowCIDRs}, log)
	if err != nil {
		return err
	}
	engineDone := make(chan struct{})
	engineCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(engineDone)
		if err := engine.Run(engineCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("webhook engine stopped", "err", err)
		}
	}()
	closers.add("webhook engine", func() error { stopEngine(); <-engineDone; return nil })

	px := proxy.New(mgr, cfg.Domain, log)
	// Monitoring (issue 7): usage and cost, budgets (admission), runaway
	// detection, analytics, Prometheus metrics, dashboard.
	mon, err := monitor.ForServer(ctx, cfg.Monitoring, st.DB(), evlog, mgr, st, log)
	if err != nil {
		return err
	}
	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	monDone := mon.Start(monCtx)
	closers.add("monitoring", func() error { stopMon(); <-monDone; return nil })

	apiSrv := api.New(log, mon.Sandboxes(), reg, st, px, events.NewHandler(evlog, log), webhook.NewHandler(engine, log),
		refine.NewHandler("http://"+ln.Addr().String(), st.DB(), log), mon, tplHandler)
	mon.AddPublic(apiSrv)
	apiSrv.AddPublic(template.UploadPattern, http.HandlerFunc(tplHandler.Upload))
	handler = apiSrv
	log.Info("sbx ready", "addr", ln.Addr().String())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("shutting down; running sandboxes keep running and are reattached on the next start")
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shCtx)
	return nil
}

// starting answers while the server wires itself: health is fine, the rest waits.
type starting struct{}

func (starting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" && r.Header.Get("E2b-Sandbox-Id") == "" {
		io.WriteString(w, "Health check successful (starting)\n")
		return
	}
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `{"code":503,"message":"sbx is starting; retry in a moment"}`+"\n")
}

// installAgent copies envd and codeinterp into <data-dir>/agent, which is
// bind-mounted read-only into every sandbox. Copying (instead of mounting
// the build output) means rebuilding bin/ never changes running sandboxes.
func installAgent(cfg Config) (string, error) {
	dst := filepath.Join(cfg.DataDir, "agent")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", fmt.Errorf("create agent dir: %w", err)
	}
	for _, name := range []string{"envd", "codeinterp"} {
		src := filepath.Join(cfg.AgentDir, name)
		if _, err := os.Stat(src); err != nil {
			if name == "envd" {
				return "", fmt.Errorf("envd binary not found at %s: run `make build` (or pass --agent-dir)", src)
			}
			continue
		}
		if err := copyFile(src, filepath.Join(dst, name)); err != nil {
			return "", err
		}
	}
	return dst, nil
}

func copyFile(src, dst string) error {
	// An identical file stays: replacing it would invalidate the open file
	// of every running gVisor sandbox, which then cannot be checkpointed
	// ("invalidated dentries can't be saved").
	if a, err := os.ReadFile(src); err == nil {
		if b, err := os.ReadFile(dst); err == nil && bytes.Equal(a, b) {
			return nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst) // atomic: running sandboxes keep the old inode
}

type closerList []struct {
	name string
	fn   func() error
}

func (c *closerList) add(name string, fn func() error) {
	*c = append(*c, struct {
		name string
		fn   func() error
	}{name, fn})
}

func (c closerList) run(log *slog.Logger) {
	for i := len(c) - 1; i >= 0; i-- {
		if err := c[i].fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("close", "component", c[i].name, "err", err)
		}
	}
}
