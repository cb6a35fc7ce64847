package sandbox

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd"
)

// BenchmarkAgentInit is a claim's /init against a real envd over its
// socket, both proofs included, with and without envd's token file (its
// syscalls cost more than the rest of the /init if written carelessly).
func BenchmarkAgentInit(b *testing.B) {
	b.Run("token-file", func(b *testing.B) { benchInit(b, true) })
	b.Run("no-token-file", func(b *testing.B) { benchInit(b, false) })
}

func benchInit(b *testing.B, tokenFile bool) {
	runDir, err := os.MkdirTemp("", "agentbench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(runDir)
	key, err := agentauth.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	opts := envd.Options{
		Getenv: func(k string) string {
			if k == "E2B_SANDBOX_ID" {
				return "sbxbench"
			}
			return ""
		},
		AgentKey: key,
	}
	if tokenFile {
		opts.TokenFile = filepath.Join(runDir, "access-token")
	}
	srv := envd.New(slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	defer srv.Close()
	ln, err := net.Listen("unix", filepath.Join(runDir, agentSocket))
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv.SocketHandler()}
	go hs.Serve(ln)
	defer hs.Close()
	a := newAgent("sbxbench", runDir, key)
	req := initRequest{AccessToken: "0123456789abcdef0123456789abcdef", EnvVars: map[string]string{"A": "1"}, DefaultUser: "root"}
	b.ResetTimer()
	for range b.N {
		if err := a.init(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
