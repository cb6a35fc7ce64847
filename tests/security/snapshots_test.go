package security

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

// TestSnapshotsCrossTeam (issue 13): a sandbox snapshot belongs to its
// team alone. Another team cannot list it, start from it (by ID or
// name), delete it, snapshot or fork the team's sandbox, and every one of
// these answers as if nothing were there. Clones and sandboxes started
// from a snapshot get fresh credentials: their own access token and agent
// key, and the snapshot holds neither the source's token nor its key.
func TestSnapshotsCrossTeam(t *testing.T) {
	s := startServer(t)
	a := s.Client(t)
	keyB := s.CreateTeam(t, "snap-b-"+randHex(t, 3))
	b := s.ClientWithKey(t, keyB)

	src := create(t, a, sdk.CreateOptions{})
	mustSh(t, src, "", "echo private > /home/user/secret.txt")
	name := "snap-private-" + randHex(t, 4)
	snap, err := a.CreateSnapshot(opCtx(t), src.ID, name)
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	t.Cleanup(func() { _ = a.DeleteSnapshot(opCtx(t), snap.ID) })
	anon, err := a.CreateSnapshot(opCtx(t), src.ID, "")
	if err != nil {
		t.Fatalf("create unnamed snapshot: %v", err)
	}
	t.Cleanup(func() { _ = a.DeleteSnapshot(opCtx(t), anon.ID) })

	t.Run("list", func(t *testing.T) {
		got, err := b.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Errorf("team B lists %v", got)
		}
		got, err = b.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{SandboxID: src.ID})
		if err != nil || len(got) != 0 {
			t.Errorf("team B listing by team A's sandbox ID = %v, %v", got, err)
		}
	})

	t.Run("start from", func(t *testing.T) {
		for _, ref := range []string{snap.ID, name, anon.ID, strings.TrimSuffix(anon.ID, ":default")} {
			_, err := b.Create(opCtx(t), sdk.CreateOptions{Template: ref})
			if !sdk.IsNotFound(err) {
				t.Errorf("team B creating from team A's snapshot %q = %v, want not found", ref, err)
			}
		}
		// The answer is the one for a snapshot that does not exist.
		other := s.Raw(t, "POST", "/v2/sandboxes", `{"templateID":"`+anon.ID+`"}`, keyHeader(keyB))
		missing := "zz" + randHex(t, 9) + ":default"
		none := s.Raw(t, "POST", "/v2/sandboxes", `{"templateID":"`+missing+`"}`, keyHeader(keyB))
		if other.Status != none.Status || strings.ReplaceAll(other.Body, anon.ID, "X") != strings.ReplaceAll(none.Body, missing, "X") {
			t.Errorf("another team's snapshot answers %d %q, a missing one %d %q", other.Status, other.Body, none.Status, none.Body)
		}
	})

	t.Run("delete", func(t *testing.T) {
		for _, ref := range []string{snap.ID, anon.ID} {
			if err := b.DeleteSnapshot(opCtx(t), ref); !sdk.IsNotFound(err) {
				t.Errorf("team B deleting team A's snapshot %s = %v, want not found", ref, err)
			}
		}
		got, err := a.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{SandboxID: src.ID})
		if err != nil || len(got) != 2 {
			t.Errorf("team A's snapshots after team B's deletes = %v, %v; want both", got, err)
		}
	})

	t.Run("snapshot and fork another team's sandbox", func(t *testing.T) {
		if _, err := b.CreateSnapshot(opCtx(t), src.ID, ""); !sdk.IsNotFound(err) {
			t.Errorf("team B snapshotting team A's sandbox = %v, want not found", err)
		}
		if _, err := b.Fork(opCtx(t), src.ID, 1, 0); !sdk.IsNotFound(err) {
			t.Errorf("team B forking team A's sandbox = %v, want not found", err)
		}
	})

	t.Run("fresh credentials", func(t *testing.T) {
		res, err := a.Fork(opCtx(t), src.ID, 1, 0)
		if err != nil || len(res) != 1 || res[0].Err != nil {
			t.Fatalf("fork = %v, %v", res, err)
		}
		clone := res[0].Sandbox
		t.Cleanup(func() { _ = clone.Kill(opCtx(t)) })
		from := create(t, a, sdk.CreateOptions{Template: anon.ID})
		for _, c := range []*sdk.Sandbox{clone, from} {
			if got := strings.TrimSpace(mustSh(t, c, "", "cat /home/user/secret.txt")); got != "private" {
				t.Errorf("sandbox %s does not have the source's files: %q", c.ID, got)
			}
			if c.EnvdAccessToken == "" || c.EnvdAccessToken == src.EnvdAccessToken {
				t.Errorf("sandbox %s has access token %q, the source %q: want its own", c.ID, c.EnvdAccessToken, src.EnvdAccessToken)
			}
			keyC, errC := savedAgentKey(s.DataDir, c.ID)
			keySrc, errS := savedAgentKey(s.DataDir, src.ID)
			if errC != nil || errS != nil || bytes.Equal(keyC, keySrc) {
				t.Errorf("agent keys of %s and the source: %v %v, equal=%v", c.ID, errC, errS, bytes.Equal(keyC, keySrc))
			}
			// The source's token does not open the clone.
			r := s.Raw(t, "GET", "/files?path=/home/user/secret.txt", "", map[string]string{
				"E2b-Sandbox-Id": c.ID, "E2b-Sandbox-Port": "49983", "X-Access-Token": src.EnvdAccessToken})
			if r.Status != http.StatusUnauthorized {
				t.Errorf("the source's token on sandbox %s = %d %s, want 401", c.ID, r.Status, r.Body)
			}
		}
		// Nothing of the source's credentials is in the snapshots on disk.
		keySrc, _ := savedAgentKey(s.DataDir, src.ID)
		_ = filepath.WalkDir(filepath.Join(s.DataDir, "sandbox-snapshots"), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte(src.EnvdAccessToken)) || len(keySrc) > 0 && bytes.Contains(b, bytes.TrimSpace(keySrc)) {
				t.Errorf("snapshot file %s holds the source's access token or agent key", p)
			}
			return nil
		})
	})

	t.Run("data dir modes", func(t *testing.T) {
		for _, dir := range []string{"sandbox-snapshots", "sandbox-layers"} {
			fi, err := os.Stat(filepath.Join(s.DataDir, dir))
			if err == nil && fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is %v: it holds tenants' files and must be 0700", dir, fi.Mode().Perm())
			}
		}
	})
}

// TestSnapshotsTeamCap: a team's key cannot fill the server's disk by
// snapshotting in a loop: past --team-max-snapshots a snapshot answers 429
// saying what to do, concurrent requests never go over the cap, giving an
// existing named snapshot new content adds none, and other teams are not
// affected.
func TestSnapshotsTeamCap(t *testing.T) {
	const capN = 2
	s := startServer(t, "--team-max-snapshots", "2")
	a := s.Client(t)
	b := s.ClientWithKey(t, s.CreateTeam(t, "snapcap-b-"+randHex(t, 3)))
	src := create(t, a, sdk.CreateOptions{})

	// Four at once: exactly capN are taken.
	type result struct {
		id     string
		status int
		body   string
	}
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		go func() {
			r := s.Raw(t, "POST", "/sandboxes/"+src.ID+"/snapshots", `{}`, keyHeader(s.APIKey))
			var out struct{ SnapshotID string }
			_ = json.Unmarshal([]byte(r.Body), &out)
			results <- result{out.SnapshotID, r.Status, r.Body}
		}()
	}
	var taken int
	var refusal string
	for i := 0; i < 4; i++ {
		r := <-results
		switch r.status {
		case http.StatusCreated:
			taken++
			t.Cleanup(func() { _ = a.DeleteSnapshot(opCtx(t), r.id) })
		case http.StatusTooManyRequests:
			refusal = r.body
		default:
			t.Errorf("snapshot = %d %s, want 201 or 429", r.status, r.body)
		}
	}
	if taken != capN {
		t.Fatalf("%d concurrent snapshots were taken with --team-max-snapshots %d", taken, capN)
	}
	if !strings.Contains(refusal, "--team-max-snapshots") || !strings.Contains(refusal, "delete") {
		t.Errorf("the refusal %q does not say what to do", refusal)
	}
	got, err := a.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{})
	if err != nil || len(got) != capN {
		t.Fatalf("team lists %d snapshots (%v), want %d", len(got), err, capN)
	}

	// Another team still may; and after a delete, this team may again.
	other := create(t, b, sdk.CreateOptions{})
	snapB, err := b.CreateSnapshot(opCtx(t), other.ID, "")
	if err != nil {
		t.Fatalf("another team's snapshot: %v", err)
	}
	t.Cleanup(func() { _ = b.DeleteSnapshot(opCtx(t), snapB.ID) })
	if err := a.DeleteSnapshot(opCtx(t), got[0].ID); err != nil {
		t.Fatal(err)
	}
	named, err := a.CreateSnapshot(opCtx(t), src.ID, "capped-"+randHex(t, 3))
	if err != nil {
		t.Fatalf("snapshot after a delete: %v", err)
	}
	t.Cleanup(func() { _ = a.DeleteSnapshot(opCtx(t), named.ID) })
	if _, err := a.CreateSnapshot(opCtx(t), src.ID, named.Names[0]); err != nil {
		t.Errorf("new content for an existing named snapshot at the cap: %v", err)
	}
	upper := strings.ToUpper(strings.TrimSuffix(named.Names[0], ":default"))
	if _, err := a.CreateSnapshot(opCtx(t), src.ID, upper); err != nil {
		t.Errorf("new content for an existing named snapshot at the cap, named in capitals (%s): %v", upper, err)
	}
}

// savedAgentKey is the agent key the host keeps for a sandbox: in the init's
// env of its saved runtime spec (<data-dir>/specs/<id>.json).
func savedAgentKey(dataDir, id string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "specs", id+".json"))
	if err != nil {
		return nil, err
	}
	for _, kv := range strings.Split(string(b), `"`) {
		if k, ok := strings.CutPrefix(kv, "SBX_AGENT_KEY="); ok {
			return []byte(k), nil
		}
	}
	return nil, fmt.Errorf("no SBX_AGENT_KEY in the saved spec of %s", id)
}
