package envd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"syscall"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd/files"
)

// maxInitBody bounds POST /init: env vars, a token and two names.
const maxInitBody = 1 << 20

// identity is who this envd is to the host: the sandbox ID it answers for
// and the agent key only the host and this process hold (agentauth). Both
// change once, on the first /init after a restore from a template
// snapshot (the clone's ID and its own key).
type identity struct {
	mu  sync.Mutex // also serialises /init
	id  string
	key agentauth.Key
}

// hostInit serves POST /init on the host's socket: only a request that
// proves it comes from the holder of the sandbox's agent key is applied,
// and the answer proves in turn that this envd holds it.
func (s *Server) hostInit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/init" {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			files.WriteError(w, http.StatusMethodNotAllowed, "use POST /init")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxInitBody+1))
		if err != nil {
			files.WriteError(w, http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		if len(body) > maxInitBody {
			files.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("/init body exceeds %d bytes", maxInitBody))
			return
		}
		status, msg := s.applyInit(w, r, body)
		if status != http.StatusNoContent {
			s.log.Warn("refused /init on the host socket", "status", status, "reason", msg)
			files.WriteError(w, status, msg)
			return
		}
		w.Header().Set("X-Envd-Version", Version)
		w.WriteHeader(http.StatusNoContent)
	})
}

// applyInit checks the host's proof and applies the body; on success it
// sets the reply proof header and returns 204.
func (s *Server) applyInit(w http.ResponseWriter, r *http.Request, body []byte) (int, string) {
	s.ident.mu.Lock()
	defer s.ident.mu.Unlock()
	if s.ident.key.IsZero() {
		return http.StatusForbidden, "this envd has no agent key (it was not started by sbx), so it accepts no /init"
	}
	id := r.Header.Get(agentauth.HeaderID)
	nonce, err := hex.DecodeString(r.Header.Get(agentauth.HeaderNonce))
	if err != nil || len(nonce) != agentauth.NonceSize {
		return http.StatusUnauthorized, "/init must carry the host's agent proof (" + agentauth.HeaderNonce + " missing or malformed)"
	}
	var rekey []byte
	if v := r.Header.Get(agentauth.HeaderRekey); v != "" {
		if rekey, err = hex.DecodeString(v); err != nil || len(rekey) != agentauth.KeySize {
			return http.StatusBadRequest, agentauth.HeaderRekey + " is malformed"
		}
	}
	key := s.ident.key
	if err := agentauth.Verify(r.Header.Get(agentauth.HeaderProof), agentauth.InitProof(key, id, nonce, body, rekey)); err != nil {
		return http.StatusUnauthorized, "/init does not carry a valid proof of the host's agent key"
	}
	// A clone of a template snapshot still has the snapshot sandbox's ID
	// until its first /init, which is the one that hands it a key.
	if rekey == nil && id != s.ident.id {
		return http.StatusUnauthorized, fmt.Sprintf("/init is addressed to sandbox %q, this is %q", id, s.ident.id)
	}
	if err := s.sess.apply(body); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	w.Header().Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.ReplyProof(key, id, nonce)))
	if rekey != nil {
		next, err := agentauth.Unwrap(key, id, nonce, rekey)
		if err != nil {
			return http.StatusBadRequest, err.Error()
		}
		s.ident.id, s.ident.key = id, next
	}
	if err := s.writeTokenFile(); err != nil {
		// In-sandbox services lose a convenience, envd keeps working.
		s.log.Warn("write access token file", "path", s.tokenFile, "err", err)
	}
	return http.StatusNoContent, ""
}

// refuseInit answers /init on the in-sandbox TCP listener: only the host
// initialises envd, over its socket (E2B's proxy keeps /init from the
// outside the same way).
func refuseInit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/init" && r.Method != http.MethodOptions {
			files.WriteError(w, http.StatusForbidden, "/init is accepted only from the host, over envd's socket")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeTokenFile leaves the access token where in-sandbox services
// started before a warm-pool claim can read it (the code interpreter's
// --access-token-file): readable by the default user only, the user such
// services run as. It is written in place, with no more syscalls than
// needed (they are most of a claim's /init), but never through a link or
// into anything but a regular file: a link, FIFO or device planted there
// is removed and the file made anew. An empty token removes it.
func (s *Server) writeTokenFile() error {
	if s.tokenFile == "" {
		return nil
	}
	token := s.sess.AccessToken()
	if token == "" {
		if err := os.Remove(s.tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	uid, gid := s.sess.defaultUserIDs()
	f, st, err := openRegular(s.tokenFile)
	if err != nil {
		return err
	}
	// Overwrite and trim rather than truncate to zero first: ext4 flushes
	// a file truncated to zero and rewritten at close (auto_da_alloc),
	// which costs more than the rest of the /init.
	_, err = f.WriteAt([]byte(token), 0)
	if err == nil && st.Size != int64(len(token)) {
		err = f.Truncate(int64(len(token)))
	}
	if err == nil && (int(st.Uid) != uid || int(st.Gid) != gid) {
		err = f.Chown(uid, gid)
	}
	if err == nil && st.Mode&0o7777 != 0o400 {
		err = f.Chmod(0o400)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("token file for uid %d: %w", uid, err)
	}
	return nil
}

// openRegular opens path for writing, creating it 0400; a link
// is not followed and a FIFO does not block. Anything but a regular file
// found there is removed once and the file created anew.
func openRegular(path string) (*os.File, *syscall.Stat_t, error) {
	const flags = os.O_WRONLY | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_NONBLOCK
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, flags, 0o400)
		if err == nil {
			var st syscall.Stat_t
			if err = syscall.Fstat(int(f.Fd()), &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
				return f, &st, nil
			}
			f.Close()
		}
		if attempt > 0 {
			return nil, nil, fmt.Errorf("%s is not a regular file: %w", path, err)
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, nil, rerr
		}
	}
}
