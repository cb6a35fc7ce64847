// Command codeinterp is the in-sandbox code interpreter server (port
// 49999), started by the code-interpreter template as
// `/.sbx/bin/codeinterp --port 49999`. It is built static (CGO_ENABLED=0)
// and bind-mounted into every sandbox.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp"
	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "codeinterp:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		port      = flag.Int("port", 49999, "TCP port to serve on (all interfaces)")
		host      = flag.String("host", "0.0.0.0", "address to bind")
		kernelDir = flag.String("kernel-dir", "", "extra kernelspec directory searched before "+strings.Join(jupyter.DefaultKernelDirs, ", "))
		cwd       = flag.String("cwd", "", "default working directory of contexts (default /home/user, else $HOME)")
		tokenFile = flag.String("access-token-file", "", "file holding the token required as X-Access-Token on /execute (default: env E2B_ACCESS_TOKEN; none = ask envd whether the sent token is valid)")
		envdURL   = flag.String("envd-url", "http://127.0.0.1:49983", "envd base URL to fetch the sandbox's global env vars from (empty = don't)")
		preload   = flag.String("preload", "numpy", "comma-separated Python modules to import into the default context in the background after start-up (empty = none)")
		pyDriver  = flag.String("python-driver", codeinterp.PythonRunner, "what runs Python contexts: "+codeinterp.PythonRunner+" (our lean IPython runner) or "+codeinterp.PythonKernel+" (the Jupyter kernel)")
		noDefault = flag.Bool("no-default-context", false, "do not start the default python and javascript contexts at start-up")
		verbose   = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	// One P: a run is a relay of small steps (the request, each kernel
	// message, the response) on goroutines that wake one another. With a
	// second P every wake-up also woke an idle thread to look for work and
	// go back to sleep: ~20% of this server's CPU per run and ~0.2 ms of a
	// trivial run's latency on two cores. Kernels do the computing, in
	// their own processes. GOMAXPROCS in the environment still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *port <= 0 || *port > 65535 {
		return fmt.Errorf("--port %d is out of range 1-65535", *port)
	}
	token := os.Getenv("E2B_ACCESS_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--access-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	cfg := codeinterp.Config{DefaultCwd: *cwd, AccessToken: token, EnvdURL: *envdURL, PythonDriver: *pyDriver}
	if err := cfg.Validate(); err != nil {
		return err
	}
	for _, m := range strings.Split(*preload, ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Preload = append(cfg.Preload, m)
		}
	}
	if *kernelDir != "" {
		cfg.KernelDirs = append([]string{*kernelDir}, jupyter.DefaultKernelDirs...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := codeinterp.New(cfg, log)
	// Listen first so the port is taken, but answer /health only once the
	// default kernels are up: the host's ready check means "run_code is fast".
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	if !*noDefault {
		start := time.Now()
		if err := srv.Start(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// Still serve: bash and javascript may work, and python runs
			// retry the start and return its error to the caller.
			log.Error("default python context failed to start", "err", err)
		} else {
			log.Info("default contexts ready", "took", time.Since(start).Round(time.Millisecond))
		}
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("code interpreter listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	srv.Close(sctx)
	return nil
}
