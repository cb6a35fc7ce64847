package envd

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/internal/agentauth"
)

// initReq builds a POST /init on the host socket with the given proof
// parts; key, id and body are what the proof is computed over.
func initReq(t *testing.T, key agentauth.Key, id string, body string, rekey []byte) (*http.Request, []byte) {
	t.Helper()
	nonce := make([]byte, agentauth.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://envd/init", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(agentauth.HeaderID, id)
	r.Header.Set(agentauth.HeaderNonce, hex.EncodeToString(nonce))
	r.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(key, id, nonce, []byte(body), rekey)))
	if rekey != nil {
		r.Header.Set(agentauth.HeaderRekey, hex.EncodeToString(rekey))
	}
	return r, nonce
}

func (e *env) sockDo(t *testing.T, r *http.Request) *http.Response {
	t.Helper()
	resp, err := e.sock.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// tokenWorks reports whether envd accepts token on the TCP listener.
func (e *env) tokenWorks(t *testing.T, token string) bool {
	t.Helper()
	resp, _ := e.do(t, "GET", "/envs", nil, "X-Access-Token", token)
	return resp.StatusCode == 200
}

func TestInitRequiresTheHostsProof(t *testing.T) {
	t.Parallel()
	const body = `{"accessToken":"planted"}`
	other, _ := agentauth.NewKey()
	tests := []struct {
		name   string
		mutate func(e *env, r *http.Request)
		status int
	}{
		{"valid", func(*env, *http.Request) {}, 204},
		{"no proof at all", func(_ *env, r *http.Request) {
			r.Header.Del(agentauth.HeaderProof)
			r.Header.Del(agentauth.HeaderNonce)
		}, 401},
		{"proof by another key", func(e *env, r *http.Request) {
			nonce, _ := hex.DecodeString(r.Header.Get(agentauth.HeaderNonce))
			r.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(other, e.id, nonce, []byte(body), nil)))
		}, 401},
		{"proof for another nonce", func(_ *env, r *http.Request) {
			r.Header.Set(agentauth.HeaderNonce, strings.Repeat("00", agentauth.NonceSize))
		}, 401},
		{"proof for another sandbox", func(_ *env, r *http.Request) { r.Header.Set(agentauth.HeaderID, "sbxother") }, 401},
		{"garbage proof", func(_ *env, r *http.Request) { r.Header.Set(agentauth.HeaderProof, "zz") }, 401},
		{"short nonce", func(_ *env, r *http.Request) { r.Header.Set(agentauth.HeaderNonce, "00") }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, map[string]string{"E2B_SANDBOX_ID": "sbxproof"})
			e.post(t, "/init", `{"accessToken":"mine"}`)
			r, _ := initReq(t, e.key, e.id, body, nil)
			tt.mutate(e, r)
			if resp := e.sockDo(t, r); resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if want := tt.status == 204; e.tokenWorks(t, "planted") != want || e.tokenWorks(t, "mine") == want {
				t.Errorf("after a %d, the planted token works: %v (want %v)", tt.status, !want, want)
			}
		})
	}
}

// A proof covers the body: the same headers with another body fail.
func TestInitProofCoversTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX_ID": "sbxbody"})
	r, _ := initReq(t, e.key, e.id, `{"accessToken":"host"}`, nil)
	tampered, _ := http.NewRequest("POST", "http://envd/init", strings.NewReader(`{"accessToken":"evil"}`))
	tampered.Header = r.Header.Clone()
	if resp := e.sockDo(t, tampered); resp.StatusCode != 401 {
		t.Fatalf("tampered body: %d, want 401", resp.StatusCode)
	}
	if resp := e.sockDo(t, r); resp.StatusCode != 204 {
		t.Fatalf("genuine /init: %d", resp.StatusCode)
	}
}

// Without an agent key (envd not started by sbx) nothing can initialise
// it, and the TCP listener never takes /init.
func TestInitWithoutKeyAndOnTCP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX_ID": "sbxnokey"})
	e.srv.ident.key = agentauth.Key{}
	r, _ := initReq(t, agentauth.Key{}, e.id, `{}`, nil)
	if resp := e.sockDo(t, r); resp.StatusCode != 403 {
		t.Errorf("/init on a keyless envd: %d, want 403", resp.StatusCode)
	}
	resp, body := e.do(t, "POST", "/init", strings.NewReader(`{"accessToken":"x"}`), "Content-Type", "application/json")
	if resp.StatusCode != 403 || !strings.Contains(string(body), "only from the host") {
		t.Errorf("/init on TCP: %d %s, want 403", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, "GET", "/init", nil); resp.StatusCode != 403 {
		t.Errorf("GET /init on TCP: %d, want 403", resp.StatusCode)
	}
}

// A clone of a template snapshot holds the snapshot's key and ID; its
// first /init, proven with that key, gives it its own ID and key, after
// which only the new key works.
func TestInitRekeysAClone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX_ID": "sbxsnapshot"})
	snap := e.key
	next, _ := agentauth.NewKey()
	const clone = "sbxclone"
	nonce := make([]byte, agentauth.NonceSize)
	_, _ = rand.Read(nonce)
	wrapped := agentauth.Wrap(snap, clone, nonce, next)
	body := `{"envVars":{"E2B_SANDBOX_ID":"sbxclone"},"accessToken":"c"}`
	r, _ := http.NewRequest("POST", "http://envd/init", strings.NewReader(body))
	r.Header.Set(agentauth.HeaderID, clone)
	r.Header.Set(agentauth.HeaderNonce, hex.EncodeToString(nonce))
	r.Header.Set(agentauth.HeaderRekey, hex.EncodeToString(wrapped))
	r.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(snap, clone, nonce, []byte(body), wrapped)))
	resp := e.sockDo(t, r)
	if resp.StatusCode != 204 {
		t.Fatalf("rekeying /init: %d", resp.StatusCode)
	}
	if err := agentauth.Verify(resp.Header.Get(agentauth.HeaderProof), agentauth.ReplyProof(snap, clone, nonce)); err != nil {
		t.Errorf("reply to the rekeying /init: %v", err)
	}
	if r, _ := initReq(t, snap, clone, `{}`, nil); e.sockDo(t, r).StatusCode != 401 {
		t.Error("the snapshot's key still initialises the clone")
	}
	if r, _ := initReq(t, next, "sbxsnapshot", `{}`, nil); e.sockDo(t, r).StatusCode != 401 {
		t.Error("the clone still answers for the snapshot sandbox's ID")
	}
	if r, _ := initReq(t, next, clone, `{"accessToken":"d"}`, nil); e.sockDo(t, r).StatusCode != 204 {
		t.Error("the clone's own key does not initialise it")
	}
	// A rekey header the proof does not cover is refused.
	r2, _ := initReq(t, next, clone, `{}`, nil)
	r2.Header.Set(agentauth.HeaderRekey, hex.EncodeToString(wrapped))
	if st := e.sockDo(t, r2).StatusCode; st != 401 {
		t.Errorf("rekey header outside the proof: %d, want 401", st)
	}
}

// The token set by /init is left in the token file for the default user
// only; a link planted in its place is replaced, not written through.
func TestTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "access-token")
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, file); err != nil {
		t.Fatal(err)
	}
	e := newEnvOpts(t, map[string]string{"E2B_SANDBOX_ID": "sbxtok"}, Options{TokenFile: file})
	if st := e.post(t, "/init", `{"accessToken":"tok1"}`); st != 204 {
		t.Fatalf("/init: %d", st)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the token was written through a planted link: %q", b)
	}
	fi, err := os.Lstat(file)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o400 {
		t.Fatalf("token file: %v %v, want a regular 0400 file", fi, err)
	}
	if b, _ := os.ReadFile(file); string(b) != "tok1" {
		t.Errorf("token file holds %q", b)
	}
	e.post(t, "/init", `{"accessToken":"t2"}`) // shorter: no tail of the old one stays
	if b, _ := os.ReadFile(file); string(b) != "t2" {
		t.Errorf("token file holds %q after a shorter token", b)
	}
	// A FIFO planted in its place neither blocks envd nor gets the token.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(file, 0o666); err != nil {
		t.Fatal(err)
	}
	e.post(t, "/init", `{"accessToken":"tok3"}`)
	if fi, err := os.Lstat(file); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the planted FIFO stayed: %v %v", fi, err)
	} else if b, _ := os.ReadFile(file); string(b) != "tok3" {
		t.Errorf("token file holds %q", b)
	}
	if os.Geteuid() == 0 { // only root can give the file to the default user
		e.post(t, "/init", `{"accessToken":"tok4","defaultUser":"nobody"}`)
		var st syscall.Stat_t
		if err := syscall.Stat(file, &st); err != nil || st.Uid != 65534 || st.Mode&0o777 != 0o400 {
			t.Errorf("token file for default user nobody: uid %d mode %o (%v), want 65534 0400", st.Uid, st.Mode&0o777, err)
		}
	}
	e.post(t, "/init", `{"accessToken":""}`)
	if _, err := os.Lstat(file); !os.IsNotExist(err) {
		t.Errorf("an emptied token left its file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
