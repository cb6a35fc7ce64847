package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestClusterTemplateBuild (cluster issue, "builds are jobs that one node
// claims"): `sbx template build` pointed at the api replica only uploads
// its build context to the shared blob store and starts a build that one
// node claims and runs; status and logs come from the database through
// the replica; a sandbox of the template starts on every node (the other
// node pulls the layers). Placement prefers the node holding the layers
// while it lives. Another team can read neither the build's
// status nor build FROM the private template, and a tampered upload URL is
// refused.
func TestClusterTemplateBuild(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{
		"e2b.Dockerfile": "FROM e2bdev/base:latest\nCOPY hello.txt /opt/hello.txt\nRUN cp /opt/hello.txt /opt/copied.txt\n",
		"hello.txt":      "built through an api replica\n",
	})
	t0 := time.Now()
	out, err := templateCLI(t, c.api, dir, "build", "--name", "cluster-tpl")
	t.Logf("template build through the api replica: %s", time.Since(t0).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("template build through the api replica: %v\n%s", err, out)
	}
	m := templateIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no template ID in output:\n%s", out)
	}
	id := m[1]
	if !strings.Contains(out, "claimed by node node-") {
		t.Errorf("the build log does not say which node claimed the build:\n%s", out)
	}
	// The context went to the blob store, not the replica's data dir.
	if ents, _ := filepath.Glob(filepath.Join(c.api.DataDir, "uploads", "*", "*", "complete")); len(ents) > 0 {
		t.Errorf("uploads kept in the api replica's data dir: %v", ents)
	}

	owner := map[string]string{"X-API-Key": c.api.APIKey}
	r := c.api.Raw(t, http.MethodGet, "/templates/"+id, "", owner)
	var info struct {
		Builds []struct {
			BuildID string `json:"buildID"`
			Status  string `json:"status"`
		} `json:"builds"`
	}
	if err := json.Unmarshal([]byte(r.Body), &info); r.Status != http.StatusOK || err != nil || len(info.Builds) == 0 || info.Builds[0].Status != "ready" {
		t.Fatalf("GET /templates/%s through the api replica = %d %s", id, r.Status, r.Body)
	}
	buildID := info.Builds[0].BuildID
	// The replica lists it and resolves its name, though a node built it.
	if r := c.api.Raw(t, http.MethodGet, "/templates", "", owner); r.Status != http.StatusOK || !strings.Contains(r.Body, `"templateID":"`+id+`"`) ||
		!strings.Contains(r.Body, `"code-interpreter"`) {
		t.Errorf("GET /templates through the api replica = %d %s; want the built template and the built-in ones", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/templates/aliases/cluster-tpl", "", owner); r.Status != http.StatusOK || !strings.Contains(r.Body, id) {
		t.Errorf("GET /templates/aliases/cluster-tpl through the api replica = %d %s; want %s", r.Status, r.Body, id)
	}
	statusPath := "/templates/" + id + "/builds/" + buildID + "/status"
	if r := c.api.Raw(t, http.MethodGet, statusPath, "", owner); r.Status != http.StatusOK || !strings.Contains(r.Body, `"ready"`) {
		t.Errorf("build status through the api replica = %d %s", r.Status, r.Body)
	}

	// A second api replica, started after the build, answers its status
	// and log, and takes an upload whose URL the first one signed.
	api2 := harness.StartNodeServer(t, c.copyKeys(t), append([]string{"--role", "api", "--node-name", "api-2"}, c.common...)...)
	if r := api2.Raw(t, http.MethodGet, statusPath, "", owner); r.Status != http.StatusOK || !strings.Contains(r.Body, `"ready"`) ||
		!strings.Contains(r.Body, "claimed by node") {
		t.Errorf("build status through the second api replica = %d %s", r.Status, r.Body)
	}
	upHash := strings.Repeat("cd", 32)
	r = c.api.Raw(t, http.MethodGet, "/templates/"+id+"/files/"+upHash, "", owner)
	var up struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(r.Body), &up); r.Status != http.StatusCreated || err != nil || up.URL == "" {
		t.Fatalf("files of a new hash = %d %s; want an upload URL", r.Status, r.Body)
	}
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	_ = tw.WriteHeader(&tar.Header{Name: "a.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("a\n"))
	_ = tw.Close()
	onAPI2 := api2.URL + up.URL[strings.Index(up.URL, "/upload/"):]
	preq, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, onAPI2, bytes.NewReader(tarball.Bytes()))
	resp, err := http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("PUT to the second replica of an upload URL the first signed = %d; want 200", resp.StatusCode)
	}
	if r := c.api.Raw(t, http.MethodGet, "/templates/"+id+"/files/"+upHash, "", owner); !strings.Contains(r.Body, `"present":true`) {
		t.Errorf("the first replica does not see the upload the second took: %d %s", r.Status, r.Body)
	}

	// Placement prefers the node that holds the build's layers: the one
	// that built it, once its heartbeat said so (a beat and a refresh).
	builder := regexp.MustCompile(`claimed by node node-(\d)`).FindStringSubmatch(out)
	if builder == nil {
		t.Fatalf("the build log names no claiming node:\n%s", out)
	}
	built, _ := strconv.Atoi(builder[1])
	built--
	time.Sleep(3 * time.Second)
	client := c.api.Client(t)
	create := func() (*sdk.Sandbox, int) {
		t.Helper()
		sb, err := client.Create(opCtx(t), sdk.CreateOptions{Template: "cluster-tpl"})
		if err != nil {
			t.Fatalf("create from the template built through the api replica: %v\napi log:\n%s", err, c.api.Log())
		}
		t.Cleanup(func() { _ = sb.Kill(context.Background()) })
		n := c.nodeOf(t, sb.ID)
		if got := runIn(t, sb, "cat /opt/copied.txt"); got != "built through an api replica\n" {
			t.Errorf("sandbox on node %d: /opt/copied.txt = %q", n+1, got)
		}
		return sb, n
	}
	for range 3 {
		if _, n := create(); n != built {
			t.Errorf("a sandbox of the template ran on node-%d; want node-%d, which holds its layers", n+1, built+1)
		}
	}
	// The other node starts it too, pulling the layers from the blob
	// store: with the builder gone, creates go there.
	c.nodes[built].Stop(syscall.SIGKILL)
	t0 = time.Now()
	if _, n := create(); n != 1-built {
		t.Errorf("with node-%d dead, the sandbox ran on node %d", built+1, n+1)
	}
	t.Logf("create + first command on the node without the layers (pull included), the builder just killed: %s", time.Since(t0).Round(time.Millisecond))

	// Another team: the build is not there for it.
	other := map[string]string{"X-API-Key": c.api.CreateTeam(t, "other")}
	if r := c.api.Raw(t, http.MethodGet, statusPath, "", other); r.Status != http.StatusNotFound || strings.Contains(r.Body, "ready") {
		t.Errorf("another team's read of the build status = %d %s; want 404", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/templates", "", other); strings.Contains(r.Body, id) {
		t.Errorf("another team's template list names the private template: %s", r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/templates/aliases/cluster-tpl", "", other); r.Status != http.StatusNotFound {
		t.Errorf("another team's alias lookup of the private template = %d %s; want 404", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/templates/"+id+"/builds/"+buildID+"/logs", "", other); r.Status != http.StatusNotFound {
		t.Errorf("another team's read of the build logs = %d %s; want 404", r.Status, r.Body)
	}
	r = c.api.Raw(t, http.MethodPost, "/v3/templates", `{"name":"thief"}`, other)
	var req struct {
		TemplateID string `json:"templateID"`
		BuildID    string `json:"buildID"`
	}
	if err := json.Unmarshal([]byte(r.Body), &req); r.Status != http.StatusAccepted || err != nil {
		t.Fatalf("another team's build request = %d %s", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodPost, "/v2/templates/"+req.TemplateID+"/builds/"+req.BuildID, `{"fromTemplate":"cluster-tpl","steps":[]}`, other); r.Status != http.StatusBadRequest ||
		!strings.Contains(r.Body, "not found") {
		t.Errorf("another team's build FROM the private template = %d %s; want 400 base not found", r.Status, r.Body)
	}

	// An upload URL whose signature was changed is refused, on the
	// replica that signed it as on any other process of the cluster.
	hash := strings.Repeat("ab", 32)
	r = c.api.Raw(t, http.MethodGet, "/templates/"+id+"/files/"+hash, "", owner)
	var files struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(r.Body), &files); r.Status != http.StatusCreated || err != nil || files.URL == "" {
		t.Fatalf("files of a new hash = %d %s; want an upload URL", r.Status, r.Body)
	}
	forged := strings.Replace(files.URL, "signature=", "signature=0", 1)
	preq, _ = http.NewRequestWithContext(t.Context(), http.MethodPut, forged, strings.NewReader("x"))
	resp, err = http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("PUT with a forged upload signature = %d; want 403", resp.StatusCode)
	}
}
