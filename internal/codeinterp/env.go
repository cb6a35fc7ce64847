package codeinterp

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"time"
)

// The sandbox's global env vars (set at create time) live in envd. They
// are fetched at start with the configured token, and again whenever envd
// accepts a new /execute token (the first run after the sandbox was
// claimed from a pool or restored from a snapshot). Kernels started after
// the fetch get them in their process environment; kernels started before
// get them per execution instead.

func (s *Server) loadGlobalEnv(ctx context.Context, token string) {
	if s.cfg.EnvdURL == "" {
		return
	}
	s.envOnce.Lock()
	defer s.envOnce.Unlock()
	if s.envLoaded {
		return
	}
	env, err := fetchEnvs(ctx, s.cfg.EnvdURL, token)
	if err != nil {
		s.log.Info("global env vars not loaded from envd", "err", err)
		return
	}
	s.globalEnv, s.envLoaded = env, true
	s.envGen++
	s.mu.Lock()
	s.lateEnv = len(s.contexts) > 0
	s.mu.Unlock()
}

func fetchEnvs(ctx context.Context, base, token string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/envs", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Access-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, fmt.Errorf("GET %s/envs: %s: %w", base, resp.Status, errBadToken)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/envs: %s", base, resp.Status)
	}
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return nil, fmt.Errorf("GET %s/envs: %w", base, err)
	}
	return env, nil
}

var errBadToken = errors.New("access token refused")

// authorize decides whether an /execute request may run code. With a
// configured token it is compared directly. Otherwise envd is the judge,
// as in E2B, where the server forwards the SDK's X-Access-Token to envd's
// GET /envs: envd answers 401 to a wrong token (and 200 to anyone when the
// sandbox has no token, in which case nothing is protected anyway). A
// token envd accepted is remembered, so only the first run pays for the
// check. If envd cannot be reached at all (the server runs outside a
// sandbox) there is nobody to ask and the request is allowed.
func (s *Server) authorize(ctx context.Context, token string) bool {
	if s.cfg.AccessToken != "" {
		return subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AccessToken)) == 1
	}
	s.envOnce.Lock()
	defer s.envOnce.Unlock()
	if s.cfg.EnvdURL == "" || s.envdDown {
		return true
	}
	if s.okToken != nil && subtle.ConstantTimeCompare([]byte(token), []byte(*s.okToken)) == 1 {
		return true
	}
	env, err := fetchEnvs(ctx, s.cfg.EnvdURL, token)
	switch {
	case errors.Is(err, errBadToken):
		return false
	case err != nil:
		// Not a refusal: envd is not there (outside a sandbox). Stop asking.
		s.log.Warn("cannot verify access tokens with envd; /execute is unprotected", "err", err)
		s.envdDown = true
		return true
	}
	s.okToken = &token
	// A token envd newly accepted means the sandbox was (re)initialised
	// since the last load: a pooled sandbox claimed, or one restored from
	// a template snapshot, both started before /init carried the
	// sandbox's env vars (and ID). Take envd's current ones.
	if !s.envLoaded || !maps.Equal(s.globalEnv, env) {
		s.globalEnv, s.envLoaded = env, true
		s.envGen++
		s.mu.Lock()
		s.lateEnv = len(s.contexts) > 0
		s.mu.Unlock()
	}
	return true
}

// kernelEnv is the process environment of a new kernel or shell.
func (s *Server) kernelEnv() []string {
	env := os.Environ()
	s.envOnce.Lock()
	defer s.envOnce.Unlock()
	for k, v := range s.globalEnv {
		env = append(env, k+"="+v)
	}
	return env
}

// envSetter is a runner that can take the sandbox's env vars for good
// (the Python kernel), instead of around every execution.
type envSetter interface {
	SetEnv(ctx context.Context, env map[string]string) error
}

// execEnv is the env vars applied to one execution only. A context whose
// kernel started before the sandbox's env was (re)loaded needs that env
// too: a Python kernel gets it set once, for good (setting and restoring
// it around every run would cost two more kernel round trips each time);
// other runners get it merged into every run. Called with c.lock held.
func (s *Server) execEnv(ctx context.Context, c *execContext, req map[string]string) (map[string]string, error) {
	s.envOnce.Lock()
	late, global, gen := s.lateEnv, s.globalEnv, s.envGen
	s.envOnce.Unlock()
	if !late || len(global) == 0 {
		return req, nil
	}
	if es, ok := c.run.(envSetter); ok {
		if c.envGen != gen {
			if err := es.SetEnv(ctx, global); err != nil {
				return nil, err
			}
			c.envGen = gen
		}
		return req, nil
	}
	out := make(map[string]string, len(global)+len(req))
	for k, v := range global {
		out[k] = v
	}
	for k, v := range req {
		out[k] = v
	}
	return out, nil
}

func jupyterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
