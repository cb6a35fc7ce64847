package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestClusterVolumesSecretsNetwork (cluster issue, "any API replica
// serves any SDK call"): with 2 api replicas and 2 nodes, a volume made
// through replica A lives on one node; replica B writes a file into it
// through the content API and creates sandboxes mounting it, which all
// land on that node and read the file; a secret stored through A reaches
// a sandbox created through B, and its value is in no process's log; an
// egress policy sent through a replica is enforced on the node (the
// denied mirror is unreachable from that sandbox, reachable from one
// without it); another team can neither see, mount nor read the volume;
// with the volume's node dead, a create mounting it says why it cannot
// be placed.
func TestClusterVolumesSecretsNetwork(t *testing.T) {
	c := startClusterSpec(t, clusterSpec{apis: 2, nodes: 2, nodeFlags: harness.MirrorAllowFlags(t)})
	a, b := c.apis[0].Client(t), c.apis[1].Client(t)
	keep := func(s *sdk.Sandbox) {
		createdIDs.Store(s.ID, true)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.Kill(ctx)
		})
	}

	// A volume through replica A: made on a node, recorded there.
	t0 := time.Now()
	vol, err := a.CreateVolume(opCtx(t), "shared")
	created := time.Since(t0)
	if err != nil {
		t.Fatalf("create a volume through api-1: %v\napi-1 log:\n%s", err, c.apis[0].Log())
	}
	db, err := sqldb.Open(context.Background(), c.dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var volNode string
	if err := db.QueryRowContext(t.Context(), `SELECT node_id FROM volumes WHERE id = $1`, vol.ID).Scan(&volNode); err != nil {
		t.Fatal(err)
	}
	home := -1
	for i := range c.nodes {
		if nodeName(i) == volNode {
			home = i
		}
	}
	if home < 0 {
		t.Fatalf("volume %s recorded on node %q; want node-1 or node-2", vol.ID, volNode)
	}
	t.Logf("volume %s lives on %s (create through api-1: %s, mkfs.ext4 and loop mount included)", vol.ID, volNode, created.Round(time.Millisecond))

	// Its content through replica B (the token from B's GET), read back
	// through A.
	volB, err := b.GetVolume(opCtx(t), "shared")
	if err != nil || volB.Token == "" {
		t.Fatalf("get the volume through api-2: %+v, %v", volB, err)
	}
	payload := []byte("written through api-2\n")
	if err := volB.WriteFile(opCtx(t), "/in/hello.txt", payload); err != nil {
		t.Fatalf("write into the volume through api-2: %v\napi-2 log:\n%s", err, c.apis[1].Log())
	}
	if got, err := vol.ReadFile(opCtx(t), "/in/hello.txt"); err != nil || string(got) != string(payload) {
		t.Fatalf("read the file back through api-1: %q, %v", got, err)
	}
	var reads []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := volB.ReadFile(opCtx(t), "/in/hello.txt"); err != nil {
			t.Fatal(err)
		}
		reads = append(reads, time.Since(t0))
	}
	slices.Sort(reads)
	t.Logf("20 content reads through api-2 (forwarded to %s): p50 %s, p95 %s", volNode, reads[9].Round(time.Microsecond), reads[18].Round(time.Microsecond))

	// A secret stored through A, resolved in a sandbox created through B
	// that mounts the volume.
	secretValue := "s3cr3t-" + randHex(t, 12)
	if _, err := a.CreateSecret(opCtx(t), "cl-token", secretValue, nil); err != nil {
		t.Fatalf("create a secret through api-1: %v", err)
	}
	var mounted []*sdk.Sandbox
	for i := range 3 {
		s, err := b.Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute,
			VolumeMounts: map[string]string{"/mnt/data": "shared"},
			EnvVars:      map[string]string{"TOKEN": sdk.SecretPlaceholder("cl-token")}})
		if err != nil {
			t.Fatalf("create %d mounting the volume through api-2: %v\napi-2 log:\n%s", i, err, c.apis[1].Log())
		}
		keep(s)
		if n := c.nodeOf(t, s.ID); n != home {
			t.Errorf("sandbox %s mounting the volume runs on node-%d; want %s, which holds it", s.ID, n+1, volNode)
		}
		mounted = append(mounted, s)
	}
	s := mounted[0]
	res, err := s.Commands.Run(opCtx(t), `cat /mnt/data/in/hello.txt; printf '%s' "$TOKEN" > /tmp/t; echo from-sandbox > /mnt/data/out.txt`, sdk.RunOptions{})
	if err != nil || res.Stdout != string(payload) {
		t.Fatalf("read the volume's file in the sandbox: %+v, %v", res, err)
	}
	if got, err := s.Files.Read(opCtx(t), "/tmp/t"); err != nil || string(got) != secretValue {
		t.Errorf("$TOKEN in the sandbox = %q, %v; want the secret's value", got, err)
	}
	if got, err := volB.ReadFile(opCtx(t), "/out.txt"); err != nil || string(got) != "from-sandbox\n" {
		t.Errorf("the sandbox's write, read through api-2's content API: %q, %v", got, err)
	}
	for _, p := range append(append([]*Server{}, c.apis...), c.nodes...) {
		if strings.Contains(p.Log(), secretValue) {
			t.Errorf("a process logged the secret's value:\n%s", p.Log())
		}
	}

	runJSVolumeThroughReplicas(t, c)
	checkClusterEgress(t, c, a, b, keep)
	checkVolumeOtherTeam(t, c, vol)

	// Paused without memory, a sandbox mounting a volume resumes on its
	// node only: another node would boot it without the volume.
	key := map[string]string{"X-API-Key": c.apis[0].APIKey}
	for _, s := range mounted[1:] {
		if r := c.apis[0].Raw(t, http.MethodPost, "/sandboxes/"+s.ID+"/pause", `{"memory":false}`, key); r.Status != http.StatusNoContent {
			t.Fatalf("pause %s to disk through api-1 = %d %s", s.ID, r.Status, r.Body)
		}
	}
	if s, err := b.Connect(opCtx(t), mounted[1].ID, sdk.ConnectOptions{}); err != nil {
		t.Errorf("resume a sandbox paused to disk on the volume's live node: %v", err)
	} else if res, err := s.Commands.Run(opCtx(t), "cat /mnt/data/in/hello.txt", sdk.RunOptions{}); err != nil || res.Stdout != string(payload) {
		t.Errorf("after a pause without memory and a resume on its own node the volume's file reads %+v, %v", res, err)
	}

	// The volume's node dies: a create mounting the volume cannot go
	// anywhere else, and says so.
	c.nodes[home].Stop(syscall.SIGKILL)
	_, err = a.Create(opCtx(t), sdk.CreateOptions{VolumeMounts: map[string]string{"/mnt/data": "shared"}})
	var apiErr *sdk.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "holds volume shared") {
		t.Errorf("create mounting a volume whose node is dead = %v; want 503 naming the volume's node as the reason", err)
	}
	t.Logf("with the volume's node dead: %v", err)
	if s, err := a.Connect(opCtx(t), mounted[2].ID, sdk.ConnectOptions{}); err == nil {
		res, _ := s.Commands.Run(opCtx(t), "cat /mnt/data/in/hello.txt", sdk.RunOptions{})
		t.Errorf("a sandbox paused to disk mounting a volume resumed on another node after its node died (volume read: %+v)", res)
	} else {
		t.Logf("resume of a paused sandbox mounting a volume whose node is dead: %v", err)
	}
	if s, err := a.Create(opCtx(t), sdk.CreateOptions{Timeout: time.Minute}); err != nil {
		t.Errorf("a create without the volume, with one node dead: %v", err)
	} else {
		keep(s)
	}
}

// checkClusterEgress: a denyOut sent through api-1 is in force on the
// node (real nftables, real sandbox), while a sandbox without a policy
// reaches the same destination; api-2 reads the policy back.
func checkClusterEgress(t *testing.T, c *testCluster, a, b *sdk.Client, keep func(*sdk.Sandbox)) {
	t.Helper()
	addrs := []string{mirrorAddr(t)}
	reach := func(s *sdk.Sandbox) bool { return reachesPort80(t, s, addrs[0]) }
	open, err := b.Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	keep(open)
	private := false
	denied, err := a.Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute,
		Network: &sdk.NetworkOptions{DenyOut: []string{addrs[0]}, AllowPublicTraffic: &private}})
	if err != nil {
		t.Fatalf("create with denyOut through api-1: %v\napi-1 log:\n%s", err, c.apis[0].Log())
	}
	keep(denied)
	if !reach(open) {
		t.Fatalf("a sandbox without a policy cannot reach the mirror %s: nothing to compare with", addrs[0])
	}
	if reach(denied) {
		t.Errorf("the sandbox created through api-1 with denyOut %s reaches it", addrs[0])
	}
	r := c.apis[1].Raw(t, http.MethodGet, "/sandboxes/"+denied.ID, "", map[string]string{"X-API-Key": c.apis[1].APIKey})
	if r.Status != http.StatusOK || !strings.Contains(r.Body, `"denyOut":["`+addrs[0]+`"]`) {
		t.Errorf("GET the denied sandbox through api-2 = %d %s; want its denyOut", r.Status, r.Body)
	}

	// Its ports want the traffic token the node made, through either
	// replica.
	if denied.TrafficAccessToken == "" {
		t.Fatal("a create with allowPublicTraffic false through api-1 returned no traffic token")
	}
	if _, err := denied.Commands.Start(opCtx(t), "mkdir -p /tmp/www && echo private > /tmp/www/index.html && "+
		"cd /tmp/www && exec python3 -m http.server 8001", sdk.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func(api *Server, token string) int {
		req, _ := http.NewRequestWithContext(opCtx(t), http.MethodGet, api.URL+"/index.html", nil)
		req.Host = "8001-" + denied.ID + "." + clusterDomain
		if token != "" {
			req.Header.Set("E2b-Traffic-Access-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, api := range c.apis {
		waitFor(t, "port 8001 with the traffic token through "+api.URL, func() bool { return get(api, denied.TrafficAccessToken) == http.StatusOK })
		if st := get(api, ""); st == http.StatusOK {
			t.Errorf("port 8001 of a private sandbox without its traffic token through %s = %d", api.URL, st)
		}
		if st := get(api, "wrong"); st == http.StatusOK {
			t.Errorf("port 8001 of a private sandbox with a wrong traffic token through %s = %d", api.URL, st)
		}
	}
}

// checkVolumeOtherTeam: another team neither sees nor mounts the volume
// nor resolves the first team's secret, and the volume's content API
// wants the volume's own token, through either replica.
func checkVolumeOtherTeam(t *testing.T, c *testCluster, vol *sdk.Volume) {
	t.Helper()
	key := c.api.CreateTeam(t, "other")
	other := c.apis[1].ClientWithKey(t, key)
	if _, err := other.GetVolume(opCtx(t), vol.ID); !sdk.IsNotFound(err) {
		t.Errorf("another team's get of the volume = %v; want not found", err)
	}
	for _, ref := range []string{"shared", vol.ID} {
		if s, err := other.Create(opCtx(t), sdk.CreateOptions{VolumeMounts: map[string]string{"/mnt/data": ref}}); err == nil {
			_ = s.Kill(opCtx(t))
			t.Errorf("another team mounted the volume by %s", ref)
		} else if !sdk.IsNotFound(err) {
			t.Errorf("another team's create mounting %s = %v; want not found", ref, err)
		}
	}
	// Nor does it get the first team's secret by naming it: the node
	// resolves references in the signed team's secrets only.
	if s, err := other.Create(opCtx(t), sdk.CreateOptions{EnvVars: map[string]string{"TOKEN": sdk.SecretPlaceholder("cl-token")}}); err == nil {
		_ = s.Kill(opCtx(t))
		t.Errorf("another team's create referencing the first team's secret succeeded")
	} else if !strings.Contains(err.Error(), "cl-token") {
		t.Errorf("another team's create referencing the first team's secret = %v; want refused naming it", err)
	}
	if err := other.DeleteVolume(opCtx(t), vol.ID); !sdk.IsNotFound(err) {
		t.Errorf("another team's delete of the volume = %v; want not found", err)
	}
	for _, api := range c.apis {
		for _, auth := range []map[string]string{nil, {"Authorization": "Bearer vtk_" + strings.Repeat("0", 48)},
			{"X-API-Key": key}, {"Authorization": "Bearer " + key}} {
			r := api.Raw(t, http.MethodGet, "/volumecontent/"+vol.ID+"/file?path=/in/hello.txt", "", auth)
			if r.Status != http.StatusUnauthorized || strings.Contains(r.Body, "written through") {
				t.Errorf("content read with %v through %s = %d %s; want 401", auth, api.URL, r.Status, r.Body)
			}
		}
	}
}

// runJSVolumeThroughReplicas: the official E2B JS SDK makes a volume and
// writes into it through api-1, then through api-2 reads it back and
// creates a sandbox mounting it, which reads the file.
func runJSVolumeThroughReplicas(t *testing.T, c *testCluster) {
	t.Helper()
	module := filepath.Join(harness.RepoRoot(t), "tests", "e2b-js", "node_modules", "e2b", "dist", "index.mjs")
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("the E2B JS SDK is missing (%v): run `make js-deps`", err)
	}
	run := func(api *Server, script string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(opCtx(t), "node", append([]string{"--input-type=module", "-e", script, "file://" + module}, args...)...)
		cmd.Env = append(os.Environ(), "E2B_API_URL="+api.URL, "E2B_SANDBOX_URL="+api.URL, "E2B_VOLUME_API_URL="+api.URL, "E2B_API_KEY="+api.APIKey)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("E2B JS SDK through %s: %v\n%s", api.URL, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	id := run(c.apis[0], `
const { Volume } = await import(process.argv[1])
const v = await Volume.create('js-vol')
await v.writeFile('/js/hello.txt', 'from js via api-1', { force: true })
console.log(v.volumeId)
`)
	out := run(c.apis[1], `
const { Sandbox, Volume } = await import(process.argv[1])
const v = await Volume.connect(process.argv[2])
const back = await v.readFile('/js/hello.txt')
const sbx = await Sandbox.create('base', { volumeMounts: { '/mnt/js': v } })
try {
  const r = await sbx.commands.run('cat /mnt/js/js/hello.txt')
  console.log(JSON.stringify({ back, inSandbox: r.stdout, id: sbx.sandboxId }))
} finally { await sbx.kill() }
`, id)
	if !strings.Contains(out, `"back":"from js via api-1"`) || !strings.Contains(out, `"inSandbox":"from js via api-1"`) {
		t.Fatalf("E2B JS SDK volume through api-1 then api-2: %s", out)
	}
}

// mirrorAddr is an address of the host's Debian mirror, which servers
// started with harness.MirrorAllowFlags let sandboxes reach.
func mirrorAddr(t *testing.T) string {
	t.Helper()
	_, addrs := harness.Mirror(t)
	return addrs[0]
}

// reachesPort80 reports whether a TCP connection from the sandbox to
// addr:80 opens.
func reachesPort80(t *testing.T, s *sdk.Sandbox, addr string) bool {
	t.Helper()
	res, err := s.Commands.Run(opCtx(t), fmt.Sprintf(`python3 -c "import socket; socket.create_connection(('%s', 80), 3); print('open')" 2>/dev/null || true`, addr), sdk.RunOptions{})
	if err != nil {
		t.Fatalf("probe %s:80 from %s: %v", addr, s.ID, err)
	}
	return strings.Contains(res.Stdout, "open")
}
