// Package codeinterp is the in-sandbox code interpreter: the HTTP server
// on port 49999 that E2B's code-interpreter SDKs talk to (protocol doc §4),
// running each context's code in a Jupyter kernel or a persistent bash.
package codeinterp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// Config configures a Server. Zero values get the defaults in withDefaults.
type Config struct {
	// KernelDirs are searched for kernelspecs (default jupyter.DefaultKernelDirs).
	KernelDirs []string
	// DefaultCwd is the working directory of contexts created without one
	// (default /home/user, else the current user's home).
	DefaultCwd string
	// AccessToken, if set, must be sent as X-Access-Token on /execute;
	// if empty, envd (EnvdURL) judges the token.
	AccessToken string
	// EnvdURL is where the sandbox's global env vars are fetched from
	// (GET <EnvdURL>/envs); empty disables fetching.
	EnvdURL string
	// StartTimeout bounds a kernel start.
	StartTimeout time.Duration
	// Keepalive is the silence after which a keepalive line is sent
	// (default DefaultKeepalive).
	Keepalive time.Duration
	// Preload are Python modules imported into the default context in the
	// background once it is ready (e.g. numpy), so the first run using
	// them is fast.
	Preload []string
	// PythonDriver is what runs Python contexts: PythonRunner (default)
	// or PythonKernel.
	PythonDriver string
	// DefaultLanguages get their default context at start, as E2B starts
	// Python and JavaScript (default: python, javascript; nil after
	// withDefaults only when set to an empty non-nil slice).
	DefaultLanguages []string
}

// Validate reports a configuration the server cannot run with.
func (c Config) Validate() error {
	switch c.PythonDriver {
	case "", PythonRunner, PythonKernel:
		return nil
	}
	return fmt.Errorf("python driver %q: want %q or %q: %w", c.PythonDriver, PythonRunner, PythonKernel, errInvalid)
}

func (c Config) withDefaults() Config {
	if len(c.KernelDirs) == 0 {
		c.KernelDirs = jupyter.DefaultKernelDirs
	}
	if c.DefaultCwd == "" {
		c.DefaultCwd = "/home/user"
		if _, err := os.Stat(c.DefaultCwd); err != nil {
			if h, err := os.UserHomeDir(); err == nil {
				c.DefaultCwd = h
			}
		}
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.PythonDriver == "" {
		c.PythonDriver = PythonRunner
	}
	if c.DefaultLanguages == nil {
		c.DefaultLanguages = []string{"python", "javascript"}
	}
	return c
}

// Context is one execution context as the API shows it.
type Context struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

type execContext struct {
	Context
	seq    uint64 // creation order, which GET /contexts lists in
	user   string
	run    runner
	lock   chan struct{} // one execution at a time; a channel so waiting honours ctx
	envGen int           // the sandbox env generation set in run for good (under lock)
}

// Server serves the code interpreter API.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	contexts map[string]*execContext
	defaults map[string]string // language → context id used when none is given
	starting map[string]chan struct{}
	seq      uint64 // last creation sequence number handed out

	driversMu sync.Mutex
	drivers   *drivers // kernel-side code, written on first use

	envOnce   sync.Mutex
	globalEnv map[string]string
	envLoaded bool
	lateEnv   bool    // loaded after some kernels had started
	envGen    int     // counts loads of globalEnv
	okToken   *string // a token envd accepted
	envdDown  bool    // envd unreachable: nobody to check tokens with
}

// New returns a server; call Start to launch the default Python context.
func New(cfg Config, log *slog.Logger) *Server {
	return &Server{
		cfg:      cfg.withDefaults(),
		log:      log,
		contexts: map[string]*execContext{},
		defaults: map[string]string{},
		starting: map[string]chan struct{}{},
	}
}

// Start fetches global env vars and starts the default contexts (Python
// and JavaScript), so the first run does not pay for a kernel start. Only
// the Python context's failure is returned; others are logged.
func (s *Server) Start(ctx context.Context) error {
	s.loadGlobalEnv(ctx, s.cfg.AccessToken)
	type started struct {
		lang string
		c    *execContext
		err  error
	}
	// Sequence numbers are taken here so the listing order does not depend
	// on which kernel is ready first.
	results := make(chan started, len(s.cfg.DefaultLanguages))
	for _, lang := range s.cfg.DefaultLanguages {
		lang, seq := normalizeLanguage(lang), s.nextSeq()
		go func() {
			c, err := s.defaultContextSeq(ctx, lang, seq)
			results <- started{lang, c, err}
		}()
	}
	var pyErr error
	for range s.cfg.DefaultLanguages {
		r := <-results
		switch {
		case r.err != nil && r.lang == "python":
			pyErr = fmt.Errorf("start default python context: %w", r.err)
		case r.err != nil:
			s.log.Warn("default context failed to start", "language", r.lang, "err", r.err)
		case r.lang == "python":
			s.preload(ctx, r.c)
		}
	}
	return pyErr
}

// preload imports cfg.Preload into the default Python context in the
// background.
func (s *Server) preload(ctx context.Context, c *execContext) {
	kr, ok := c.run.(silentRunner)
	if !ok || len(s.cfg.Preload) == 0 {
		return
	}
	// After the ready check, not before: a sandbox from a warm pool
	// has long finished these imports when its first run arrives, and
	// a cold one pays no more than the user's own import would cost.
	// Holding the context's lock keeps user code from interleaving.
	c.lock <- struct{}{}
	go func() {
		defer func() { <-c.lock }()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := kr.silentRun(wctx, preloadCode(s.cfg.Preload)); err != nil {
			s.log.Warn("preloading modules failed", "err", err)
			return
		}
		s.log.Info("preloaded modules", "modules", s.cfg.Preload, "took", time.Since(start).Round(time.Millisecond))
	}()
}

func (s *Server) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

// preloadCode imports modules into the kernel's module cache without
// touching the user's namespace; missing modules are ignored.
func preloadCode(modules []string) string {
	list, _ := json.Marshal(modules)
	return "import importlib as __sbx_il\n" +
		"for __sbx_m in " + string(list) + ":\n" +
		"    try: __sbx_il.import_module(__sbx_m)\n" +
		"    except Exception: pass\n" +
		"del __sbx_il, __sbx_m\n"
}

// Close shuts down every context.
func (s *Server) Close(ctx context.Context) {
	s.mu.Lock()
	cs := make([]*execContext, 0, len(s.contexts))
	for _, c := range s.contexts {
		cs = append(cs, c)
	}
	s.contexts = map[string]*execContext{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.run.Close(ctx) }()
	}
	wg.Wait()
	s.driversMu.Lock()
	if s.drivers != nil {
		os.RemoveAll(s.drivers.dir)
		s.drivers = nil
	}
	s.driversMu.Unlock()
}

// kernelDrivers returns the kernel-side code files, writing them once.
func (s *Server) kernelDrivers() (*drivers, error) {
	s.driversMu.Lock()
	defer s.driversMu.Unlock()
	if s.drivers == nil {
		d, err := writeDrivers()
		if err != nil {
			return nil, err
		}
		s.drivers = d
	}
	return s.drivers, nil
}

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, "OK") })
	mux.HandleFunc("POST /execute", s.handleExecute)
	mux.HandleFunc("POST /contexts", s.handleCreateContext)
	mux.HandleFunc("GET /contexts", s.handleListContexts)
	mux.HandleFunc("POST /contexts/{id}/restart", s.handleRestartContext)
	mux.HandleFunc("DELETE /contexts/{id}", s.handleDeleteContext)
	return mux
}

// normalizeLanguage maps the SDKs' language names to a runner kind.
func normalizeLanguage(lang string) string {
	switch l := strings.ToLower(strings.TrimSpace(lang)); l {
	case "", "python", "python3":
		return "python"
	case "js", "javascript", "node":
		return "javascript"
	case "ts", "typescript":
		return "typescript"
	case "sh", "shell":
		return "bash"
	default:
		return l
	}
}

// kernelName picks the kernelspec for a language: other languages run in
// the kernelspec of their own name (install one to add a language).
func kernelName(lang string) string {
	switch lang {
	case "python":
		return "python3"
	case "r":
		return "ir" // Debian's r-cran-irkernel
	}
	return lang
}

// languages lists what contexts can run here, for error messages.
func (s *Server) languages() []string {
	specs := jupyter.ListSpecs(s.cfg.KernelDirs)
	has := func(name string) bool { return slices.Contains(specs, name) }
	var out []string
	if has("python3") {
		out = append(out, "python")
	}
	if _, err := exec.LookPath("node"); err == nil || has("javascript") {
		out = append(out, "javascript", "typescript")
	}
	if has("ir") {
		out = append(out, "r")
	}
	out = append(out, "bash")
	for _, n := range specs {
		if !slices.Contains([]string{"python3", "ir", "javascript", "typescript", "bash"}, n) {
			out = append(out, n)
		}
	}
	return out
}

// contextRequest describes a context to create.
type contextRequest struct {
	Language string
	Cwd      string
	User     string // "" = the server's own user (root in a sandbox)
}

func (s *Server) newContext(ctx context.Context, req contextRequest, seq uint64) (*execContext, error) {
	lang := normalizeLanguage(req.Language)
	cwd := req.Cwd
	if cwd == "" {
		cwd = s.cfg.DefaultCwd
	}
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("cwd %q is not an existing directory: %w", cwd, errInvalid)
	}
	user, err := lookupKernelUser(req.User)
	if err != nil {
		return nil, err
	}
	env := user.env(s.kernelEnv())
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	run, err := s.startRunner(ctx, lang, cwd, env, user)
	if err != nil {
		return nil, err
	}
	if seq == 0 {
		seq = s.nextSeq()
	}
	c := &execContext{Context: Context{ID: newContextID(), Language: lang, Cwd: cwd}, seq: seq, user: user.name, run: run, lock: make(chan struct{}, 1)}
	s.mu.Lock()
	s.contexts[c.ID] = c
	s.mu.Unlock()
	s.log.Info("context started", "context.id", c.ID, "language", lang, "cwd", cwd, "user", user.name)
	return c, nil
}

// startRunner starts what runs a language's code: our own node driver for
// JavaScript and TypeScript and a persistent shell for bash (unless a
// kernelspec of that name is installed), a Jupyter kernel otherwise.
func (s *Server) startRunner(ctx context.Context, lang, cwd string, env []string, user *kernelUser) (runner, error) {
	_, specErr := jupyter.LoadSpec(s.cfg.KernelDirs, kernelName(lang))
	switch {
	case (lang == "javascript" || lang == "typescript") && specErr != nil:
		if node, err := exec.LookPath("node"); err == nil {
			d, err := s.kernelDrivers()
			if err != nil {
				return nil, err
			}
			return startJSRunner(node, d.nodeKernel, cwd, env, user, lang == "typescript")
		}
	case lang == "bash" && specErr != nil:
		return startBashRunner(cwd, env, user)
	}
	spec, err := jupyter.LoadSpec(s.cfg.KernelDirs, kernelName(lang))
	if err != nil {
		return nil, fmt.Errorf("language %q is not available in this sandbox (available: %s; installing a Jupyter kernelspec named %q adds it): %w",
			lang, strings.Join(s.languages(), ", "), kernelName(lang), errInvalid)
	}
	startup, runner := "", ""
	if d, err := s.kernelDrivers(); err == nil {
		startup, runner = d.ipythonStartup, d.pyRunner
	} else {
		s.log.Warn("kernels start without the rich-result start-up file", "err", err)
	}
	if lang == "python" && s.cfg.PythonDriver == PythonRunner && runner != "" {
		if python, ok := ipykernelPython(spec); ok {
			for k, v := range spec.Env {
				env = append(env, k+"="+v)
			}
			return startPyRunner(python, runner, startup, cwd, env, user)
		}
	}
	log := s.log.With("language", lang)
	return startKernelRunner(ctx, spec, startup, jupyter.Options{Dir: cwd, Env: env, Output: kernelOutput{log}, Logger: log, Credential: user.cred}, log)
}

// defaultContext returns the shared context of a language, starting it
// once even when many requests ask at the same time.
func (s *Server) defaultContext(ctx context.Context, lang string) (*execContext, error) {
	return s.defaultContextSeq(ctx, lang, 0)
}

// defaultContextSeq is defaultContext listing a context it starts at
// position seq (0 = next).
func (s *Server) defaultContextSeq(ctx context.Context, lang string, seq uint64) (*execContext, error) {
	lang = normalizeLanguage(lang)
	for {
		s.mu.Lock()
		if id, ok := s.defaults[lang]; ok {
			if c, ok := s.contexts[id]; ok {
				s.mu.Unlock()
				return c, nil
			}
			delete(s.defaults, lang) // it was deleted by the user
		}
		if wait, ok := s.starting[lang]; ok {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		s.starting[lang] = done
		s.mu.Unlock()

		c, err := s.newContext(ctx, contextRequest{Language: lang}, seq)
		s.mu.Lock()
		delete(s.starting, lang)
		if err == nil {
			s.defaults[lang] = c.ID
		}
		s.mu.Unlock()
		close(done)
		return c, err
	}
}

func (s *Server) lookup(id string) (*execContext, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contexts[id]
	return c, ok
}

// executeRequest is the body of POST /execute.
type executeRequest struct {
	Code      string            `json:"code"`
	ContextID *string           `json:"context_id"`
	Language  *string           `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

var errInvalid = errors.New("invalid request")

func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(r.Context(), r.Header.Get("X-Access-Token")) {
		writeText(w, http.StatusUnauthorized, "Missing or invalid X-Access-Token header: send the sandbox's envd access token")
		return
	}
	var req executeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeText(w, http.StatusBadRequest, "Request body must be JSON {\"code\": ..., \"context_id\"?: ..., \"language\"?: ..., \"env_vars\"?: {...}}: "+err.Error())
		return
	}
	if req.ContextID != nil && *req.ContextID != "" && req.Language != nil && *req.Language != "" {
		writeText(w, http.StatusBadRequest, "Only one of context_id or language can be provided, not both")
		return
	}
	var (
		c   *execContext
		err error
	)
	if req.ContextID != nil && *req.ContextID != "" {
		var ok bool
		if c, ok = s.lookup(*req.ContextID); !ok {
			writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", *req.ContextID))
			return
		}
	} else {
		lang := ""
		if req.Language != nil {
			lang = *req.Language
		}
		if c, err = s.defaultContext(r.Context(), lang); err != nil {
			s.writeError(w, err)
			return
		}
	}
	select {
	case c.lock <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	defer func() { <-c.lock }()

	out := newNDJSON(w, s.cfg.Keepalive)
	defer out.close()
	env, err := s.execEnv(r.Context(), c, req.EnvVars)
	if err != nil {
		out.emit(errorLine("EnvVarsError", err.Error(), nil))
		return
	}
	if err := c.run.Execute(r.Context(), req.Code, env, out); err != nil && r.Context().Err() == nil && !errors.Is(err, errToldLost) {
		s.log.Warn("execution failed", "context.id", c.ID, "err", err)
	}
}

type createContextRequest struct {
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
	User     string `json:"user"` // E2B's server takes it; default root
}

func (s *Server) handleCreateContext(w http.ResponseWriter, r *http.Request) {
	var req createContextRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeText(w, http.StatusBadRequest, "Request body must be JSON {\"language\"?: ..., \"cwd\"?: ..., \"user\"?: ...}: "+err.Error())
			return
		}
	}
	c, err := s.newContext(r.Context(), contextRequest(req), 0)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c.Context)
}

func (s *Server) handleListContexts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	cs := make([]*execContext, 0, len(s.contexts))
	for _, c := range s.contexts {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	// In creation order, as E2B lists them.
	sort.Slice(cs, func(i, j int) bool { return cs[i].seq < cs[j].seq })
	out := make([]Context, len(cs))
	for i, c := range cs {
		out[i] = c.Context
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRestartContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.lookup(id)
	if !ok {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StartTimeout)
	defer cancel()
	if err := c.run.Restart(ctx); err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nil)
}

func (s *Server) handleDeleteContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	c, ok := s.contexts[id]
	delete(s.contexts, id)
	s.mu.Unlock()
	if !ok {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", id))
		return
	}
	if err := c.run.Close(r.Context()); err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nil)
}

// writeError is the one place errors become HTTP responses. Like E2B's
// server, error bodies are plain text (the SDKs show them verbatim).
func (s *Server) writeError(w http.ResponseWriter, err error) {
	if errors.Is(err, errInvalid) {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Error("request failed", "err", err)
	writeText(w, http.StatusInternalServerError, err.Error())
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func newContextID() string {
	// Same shape as a Jupyter kernel id, which is what E2B returns.
	return jupyterID()
}
