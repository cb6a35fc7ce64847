// Command envd is the sbx in-sandbox agent. It runs as PID 1 of every
// sandbox (`envd --init --socket /.sbx/run/envd.sock --port 49983`) and
// serves E2B's envd protocol to the host over the unix socket and to the
// sandbox's own network on the TCP port.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd"
)

type config struct {
	init      bool
	socket    string
	port      int
	version   bool
	debug     bool
	runDir    string
	keyFD     int
	tokenFile string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.init, "init", false, "run as PID 1: serve and reap orphans in one process")
	fs.StringVar(&c.socket, "socket", "", "also listen on this unix socket (the host's channel; honours X-Sbx-Port forwarding)")
	fs.IntVar(&c.port, "port", 49983, "TCP port on 0.0.0.0; 0 disables")
	fs.BoolVar(&c.version, "version", false, "print the envd protocol version and exit")
	fs.BoolVar(&c.debug, "debug", false, "log at debug level")
	fs.StringVar(&c.runDir, "run-dir", "/run/e2b", "where to write the .E2B_SANDBOX_ID-style identity files; empty skips them")
	fs.IntVar(&c.keyFD, "agent-key-fd", 0, "read the sandbox's agent key from this descriptor (otherwise the key is read from $"+agentauth.EnvVar+")")
	fs.StringVar(&c.tokenFile, "token-file", "", "where to leave the access token set by /init for in-sandbox services (default: access-token next to --socket)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q; envd takes only flags", fs.Args())
	}
	if c.keyFD < 0 || c.keyFD > 0 && c.keyFD < 3 {
		return c, fmt.Errorf("--agent-key-fd %d: want a descriptor ≥ 3", c.keyFD)
	}
	if c.port < 0 || c.port > 65535 {
		return c, fmt.Errorf("--port %d is not a TCP port (0-65535)", c.port)
	}
	if !c.version && c.socket == "" && c.port == 0 {
		return c, fmt.Errorf("nothing to serve: give --socket PATH, --port N, or both")
	}
	return c, nil
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(2)
	}
	if c.version {
		fmt.Println(envd.Version)
		return
	}
	level := slog.LevelInfo
	if c.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: utcTime}))
	key, err := serverKey(c)
	if err != nil {
		log.Error("envd", "err", err)
		os.Exit(1)
	}
	if c.tokenFile == "" && c.socket != "" {
		c.tokenFile = filepath.Join(filepath.Dir(c.socket), "access-token")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := envd.New(log, envd.Options{RunDir: c.runDir, AgentKey: key, TokenFile: c.tokenFile})
	if c.init {
		defer orphanReaper(srv.ReapOrphans)()
	}
	if err := srv.Serve(ctx, envd.Listen{Socket: c.socket, Port: c.port, HostSocket: hostSocketSignals()}); err != nil {
		log.Error("envd stopped", "err", err)
		os.Exit(1)
	}
}

// serverKey makes envd non-dumpable and takes the agent key from the
// descriptor given by --agent-key-fd or else from its environment (how
// the host hands it to envd --init). Without either, envd refuses every
// /init.
func serverKey(c config) (agentauth.Key, error) {
	if c.keyFD > 0 {
		if err := nonDumpable(); err != nil {
			return agentauth.Key{}, err
		}
		return readKeyFrom(c.keyFD)
	}
	k, _, err := takeKeyFromEnv() // scrubs /proc/self/environ, which needs dumpable
	if err == nil {
		err = nonDumpable()
	}
	return k, err
}

// utcTime logs times in UTC. slog's own formatting uses the local zone,
// and the first line logged would load it from the template's
// /etc/localtime at every sandbox start; the host reads these lines
// (internal/sandbox's envdLog) and converts them to UTC anyway.
func utcTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 && a.Value.Kind() == slog.KindTime {
		a.Value = slog.TimeValue(a.Value.Time().UTC())
	}
	return a
}
