// Package envd is the in-sandbox agent: it serves E2B's envd protocol
// (Connect services process.Process and filesystem.Filesystem, plus the
// plain HTTP endpoints /health, /init, /envs, /metrics and /files) and,
// on the host-facing unix socket, forwards requests to sandbox ports.
package envd

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/files"
	"github.com/sbxdev/sbx/internal/envd/filesystem"
	"github.com/sbxdev/sbx/internal/envd/process"
)

// Version is the envd protocol version reported to the SDKs; features are
// gated on it (protocol doc §3.8), and 0.6.13 enables all of them.
const Version = "0.6.13"

// Options configure a Server.
type Options struct {
	// Getenv reads envd's own environment (os.Getenv in production).
	Getenv func(string) string
	// Now is the clock for signature expiry (time.Now in production).
	Now func() time.Time
	// RunDir receives the .E2B_* identity files; "" skips writing them.
	RunDir string
	// AgentKey is the sandbox's agent key (agentauth), which POST /init
	// on the host's socket must prove; zero refuses every /init.
	AgentKey agentauth.Key
	// TokenFile is where the access token set by /init is left for
	// in-sandbox services; "" leaves it nowhere.
	TokenFile string
}

// Server is one envd instance.
type Server struct {
	log     *slog.Logger
	sess    *session
	procs   *process.Manager
	fs      *filesystem.Service
	metrics *metrics
	tcp     http.Handler
	socket  http.Handler

	ident     identity
	tokenFile string
}

// New builds a server; it starts nothing until Serve.
func New(log *slog.Logger, opts Options) *Server {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		log:     log,
		sess:    newSession(opts.Getenv),
		procs:   process.NewManager(log),
		metrics: newMetrics(),
		ident:   identity{id: opts.Getenv("E2B_SANDBOX_ID"), key: opts.AgentKey},

		tokenFile: opts.TokenFile,
	}
	if opts.RunDir != "" {
		s.sess.writeRunFiles(opts.RunDir)
	}
	s.fs = filesystem.NewService(s.sess)

	mux := http.NewServeMux()
	rpc := connect.Routes{}
	process.NewService(s.procs, s.sess).Register(rpc)
	s.fs.Register(rpc)
	mux.Handle("/process.Process/", rpc)
	mux.Handle("/filesystem.Filesystem/", rpc)
	mux.Handle("/files", files.NewHandler(s.sess, log, opts.Now))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /envs", s.handleEnvs)
	mux.HandleFunc("GET /metrics", s.handleMetrics)

	s.tcp = cors(refuseInit(s.requireToken(mux)))
	s.socket = s.forwarding(cors(s.hostInit(s.requireToken(mux))), opts.Getenv("E2B_SANDBOX_ID"))
	return s
}

// Handler is what the in-sandbox TCP listener serves.
func (s *Server) Handler() http.Handler { return s.tcp }

// SocketHandler is what the host-facing unix socket serves: Handler plus
// X-Sbx-Port forwarding.
func (s *Server) SocketHandler() http.Handler { return s.socket }

// ReapOrphans reaps the exited children of envd's process that it did not
// start through the process service (see process.Manager.ReapOrphans).
func (s *Server) ReapOrphans() int { return s.procs.ReapOrphans() }

// Close kills the processes envd started and stops polling watchers.
func (s *Server) Close() {
	s.procs.Close()
	s.fs.Close()
}

const unauthorizedMessage = "unauthorized access, please provide a valid access token or method signing if supported"

// requireToken enforces the /init access token. /health is always open;
// /files checks the token or a signature itself. /init never gets here:
// the host's socket checks the host's proof instead (hostInit), the TCP
// listener refuses it (refuseInit).
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := s.sess.AccessToken()
		open := token == "" || r.URL.Path == "/health" || r.URL.Path == "/files" ||
			r.Method == http.MethodOptions
		if !open && subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Access-Token")), []byte(token)) != 1 {
			if strings.HasPrefix(r.URL.Path, "/process.") || strings.HasPrefix(r.URL.Path, "/filesystem.") {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_ = json.NewEncoder(w).Encode(connect.Errorf(connect.Unauthenticated, unauthorizedMessage))
				return
			}
			files.WriteError(w, http.StatusUnauthorized, unauthorizedMessage)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cors is as permissive as envd's: browsers may call envd from any origin.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "Connect-Protocol-Version, Connect-Timeout-Ms, Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Content-Encoding, Content-Disposition, Content-Length, X-Envd-Version")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			} else {
				h.Set("Access-Control-Allow-Headers", "*")
			}
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleEnvs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.sess.Vars())
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	m, err := s.metrics.read()
	if err != nil {
		s.log.Warn("read metrics", "err", err)
		files.WriteError(w, http.StatusInternalServerError, "read metrics: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

// Listen configures the listeners of Serve.
type Listen struct {
	Socket string // unix socket path, "" for none
	Port   int    // TCP port on 0.0.0.0, 0 for none
	// HostSocket, when given, closes the unix socket on false and listens
	// again on true (around a checkpoint, see hostChannel).
	HostSocket <-chan bool
}

// Serve listens as configured and serves until ctx is done; then it
// stops accepting, cuts open streams and kills started processes.
func (s *Server) Serve(ctx context.Context, l Listen) error {
	if l.Socket == "" && l.Port == 0 {
		return errors.New("nothing to listen on: give --socket, --port or both")
	}
	var servers []*http.Server
	errc := make(chan error, 2)
	var host *hostChannel
	if l.Socket != "" {
		host = &hostChannel{path: l.Socket, handler: s.socket, log: s.log}
		if err := host.open(); err != nil {
			return err
		}
		defer host.close()
	}
	if l.Port != 0 {
		ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", l.Port))
		if err != nil {
			return fmt.Errorf("listen on port %d: %w", l.Port, err)
		}
		srv := &http.Server{Handler: s.tcp, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		servers = append(servers, srv)
		go func() { errc <- srv.Serve(ln) }()
		s.log.Info("envd listening", "addr", ln.Addr().String(), "version", Version)
	}
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case on := <-l.HostSocket:
			if host == nil {
				continue
			}
			if !on {
				host.close()
			} else if oerr := host.open(); oerr != nil {
				s.log.Error("reopen host socket", "err", oerr)
			}
		}
	}
	for _, srv := range servers {
		_ = srv.Close() // streams never end by themselves; Shutdown would wait forever
	}
	s.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
