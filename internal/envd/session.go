package envd

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/users"
)

// fallbackUser is the user when neither the request nor /init names one.
const fallbackUser = "root"

// sandboxVars are inherited from envd's own environment (set by the host)
// and passed to every process.
var sandboxVars = []string{"E2B_SANDBOX", "E2B_SANDBOX_ID", "E2B_TEMPLATE_ID"}

// session is the sandbox-wide state set by /init. It implements the
// Session interfaces of the process, filesystem and files packages.
type session struct {
	mu          sync.RWMutex
	base        map[string]string // from envd's environment
	vars        map[string]string // base + /init envVars
	token       string
	user        string
	userIDs     [2]int // uid and gid of user as /init resolved it (root: 0, 0)
	workdir     string
	initialised time.Time // timestamp of the last applied /init
}

func newSession(getenv func(string) string) *session {
	s := &session{base: map[string]string{}}
	for _, k := range sandboxVars {
		if v := getenv(k); v != "" {
			s.base[k] = v
		}
	}
	s.vars = maps.Clone(s.base)
	return s
}

// writeRunFiles mirrors E2B, which exposes the sandbox identity as files
// under /run/e2b for programs that do not see envd's environment. Failure
// is harmless (read-only /run, tests as non-root), so it is ignored.
func (s *session) writeRunFiles(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for k, v := range s.base {
		_ = os.WriteFile(filepath.Join(dir, "."+k), []byte(v), 0o644)
	}
}

// initRequest is the body of POST /init. Absent fields keep their value.
type initRequest struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken"`
	Timestamp      *time.Time        `json:"timestamp"`
	DefaultUser    *string           `json:"defaultUser"`
	DefaultWorkdir *string           `json:"defaultWorkdir"`
}

func (s *session) apply(body []byte) error {
	var req initRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("body must be JSON {envVars, accessToken, timestamp, defaultUser, defaultWorkdir}: %w", err)
		}
	}
	var ids [2]int
	if req.DefaultUser != nil && *req.DefaultUser != "" {
		u, err := users.Lookup(*req.DefaultUser)
		if err != nil {
			return fmt.Errorf("defaultUser: %w", err)
		}
		ids = [2]int{int(u.UID), int(u.GID)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The host retries /init; an older request arriving late must not undo
	// a newer one.
	if req.Timestamp != nil {
		if req.Timestamp.Before(s.initialised) {
			return nil
		}
		s.initialised = *req.Timestamp
	}
	if req.EnvVars != nil {
		vars := maps.Clone(s.base)
		maps.Copy(vars, req.EnvVars)
		s.vars = vars
	}
	if req.AccessToken != nil {
		s.token = *req.AccessToken
	}
	if req.DefaultUser != nil {
		s.user, s.userIDs = *req.DefaultUser, ids
	}
	if req.DefaultWorkdir != nil {
		s.workdir = *req.DefaultWorkdir
	}
	return nil
}

// Vars returns the sandbox-wide environment; callers must not modify it.
func (s *session) Vars() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.vars
}

func (s *session) Workdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.workdir
}

// defaultUserIDs are the uid and gid of the default user as the last
// /init that named one resolved it (root's until then).
func (s *session) defaultUserIDs() (uid, gid int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.userIDs[0], s.userIDs[1]
}

func (s *session) AccessToken() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.token
}

// LookupUser resolves name, "" meaning the default user.
func (s *session) LookupUser(name string) (*users.User, error) {
	if name == "" {
		s.mu.RLock()
		name = s.user
		s.mu.RUnlock()
		if name == "" {
			name = fallbackUser
		}
	}
	u, err := users.Lookup(name)
	if errors.Is(err, users.ErrUnknown) {
		return nil, errors.New("invalid username")
	}
	return u, err
}

// User resolves the user of an RPC from its Basic authorization header.
func (s *session) User(r *http.Request) (*users.User, error) {
	name, _, err := users.FromBasicAuth(r.Header.Get("Authorization"))
	if err != nil {
		return nil, connect.Errorf(connect.Unauthenticated, "%v", err)
	}
	u, err := s.LookupUser(name)
	if err != nil {
		return nil, connect.Errorf(connect.Unauthenticated, "%v", err)
	}
	return u, nil
}
