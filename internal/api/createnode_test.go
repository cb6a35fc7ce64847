package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/volume"
)

// teamVolumes stands in for the database's volume rows of team t1.
type teamVolumes map[string]volume.Volume

func (v teamVolumes) Get(_ context.Context, teamID, ref string) (volume.Volume, error) {
	for _, x := range v {
		if x.TeamID == teamID && (x.ID == ref || x.Name == ref) {
			return x, nil
		}
	}
	return volume.Volume{}, errdefs.NotFound("volume %q not found", ref)
}
func (v teamVolumes) Create(context.Context, string, string) (volume.Volume, error) {
	return volume.Volume{}, errors.ErrUnsupported
}
func (v teamVolumes) List(context.Context, string) ([]volume.Volume, error) { return nil, nil }
func (v teamVolumes) Delete(context.Context, string, string) error          { return nil }

// TestVolumesOnNode: an api replica's create resolves volumeMounts in
// the team's volumes (another team's is not found, by name or ID), sends
// their IDs and pins the sandbox to their node; volumes of two nodes, or
// of a single box, are refused before any placement.
func TestVolumesOnNode(t *testing.T) {
	s := &Server{volumes: teamVolumes{
		"a1": {ID: "vol_a1", TeamID: "t1", Name: "a1", NodeID: "node-a"},
		"a2": {ID: "vol_a2", TeamID: "t1", Name: "a2", NodeID: "node-a"},
		"b1": {ID: "vol_b1", TeamID: "t1", Name: "b1", NodeID: "node-b"},
		"s1": {ID: "vol_s1", TeamID: "t1", Name: "s1"},
		"x1": {ID: "vol_x1", TeamID: "t2", Name: "x1", NodeID: "node-a"},
	}}
	tests := []struct {
		name     string
		vms      []volumeMount
		wantErr  error
		wantMsg  string
		wantNode string
		want     []cluster.VolumeMount
	}{
		{"none", nil, nil, "", "", nil},
		{"two volumes of one node, by name and ID", []volumeMount{{"a1", "/mnt/a/"}, {"vol_a2", "/mnt/b"}}, nil, "", "node-a",
			[]cluster.VolumeMount{{Name: "vol_a1", Path: "/mnt/a"}, {Name: "vol_a2", Path: "/mnt/b"}}},
		{"another team's, by name", []volumeMount{{"x1", "/mnt/x"}}, errdefs.ErrNotFound, "", "", nil},
		{"another team's, by ID", []volumeMount{{"vol_x1", "/mnt/x"}}, errdefs.ErrNotFound, "", "", nil},
		{"volumes of two nodes", []volumeMount{{"a1", "/mnt/a"}, {"b1", "/mnt/b"}}, errdefs.ErrInvalidArgument, "different nodes", "", nil},
		{"a single box's volume", []volumeMount{{"s1", "/mnt/s"}}, errdefs.ErrFailedPrecondition, "single server", "", nil},
		{"a bad path", []volumeMount{{"a1", "/proc/x"}}, errdefs.ErrInvalidArgument, "volumeMounts path", "", nil},
		{"one path twice", []volumeMount{{"a1", "/mnt/a"}, {"a2", "/mnt/a/"}}, errdefs.ErrInvalidArgument, "distinct", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var spec cluster.NodeCreate
			err := s.volumesOnNode(t.Context(), "t1", tt.vms, &spec)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v; want %v containing %q", err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil || spec.Node != tt.wantNode || len(spec.VolumeMounts) != len(tt.want) {
				t.Fatalf("spec = %+v, %v; want node %q, mounts %v", spec, err, tt.wantNode, tt.want)
			}
			for i := range tt.want {
				if spec.VolumeMounts[i] != tt.want[i] {
					t.Errorf("mount %d = %+v; want %+v", i, spec.VolumeMounts[i], tt.want[i])
				}
			}
		})
	}
}

// contentStub stands in for volume.ContentHandler's routes.
type contentStub struct{}

func (contentStub) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("GET /volumecontent/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "content of "+r.PathValue("id"))
	})
}

// TestNodeServesOnlyContentRoutesForVolumes: a node serves signed
// /volumecontent requests from the content routes alone; under that
// prefix nothing reaches the team's API, which the signature (made for
// the volume's team) would otherwise open to a holder of the volume's
// token.
func TestNodeServesOnlyContentRoutesForVolumes(t *testing.T) {
	secret, err := cluster.NewSecret("test-cluster-secret-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	s := New(log, nil, nil, nil, proxy.New(oneSandbox{}, "sbx.test", log))
	s.SetClusterVerifier(cluster.NewVerifier(secret, "node-a"))
	s.SetVolumes(teamVolumes{}, contentStub{})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	signer := cluster.NewSigner(secret)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/volumecontent/vol_x/file?path=/a", http.StatusOK},
		{"/volumecontent/vol_x/..%2F..%2Fsandboxes", http.StatusNotFound},
		{"/volumecontent/vol_x/../../volumes", http.StatusNotFound},
		{"/volumecontent/vol_x/secrets", http.StatusNotFound},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+tt.path, nil)
		if err := signer.Sign(req, "node-a", "t1"); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s signed for the team = %d %s; want %d", tt.path, resp.StatusCode, b, tt.status)
		}
	}
}

// spySecrets fails the test if an api replica resolves a secret.
type spySecrets struct {
	Secrets
	t *testing.T
}

func (s spySecrets) Resolve(context.Context, string, map[string]string) (map[string]string, error) {
	s.t.Error("the api replica resolved secrets: their values would cross to the node")
	return nil, errors.ErrUnsupported
}

type captureCreate struct {
	req sandbox.CreateRequest
	nc  cluster.NodeCreate
}

func (c *captureCreate) CreateOnNode(_ context.Context, req sandbox.CreateRequest, nc cluster.NodeCreate) (store.Sandbox, string, error) {
	c.req, c.nc = req, nc
	return store.Sandbox{ID: "sb1"}, "tt", nil
}

// TestCreateOnNodeSendsReferences: an api replica sends envVars with
// their secret references unresolved (the node resolves them for the
// signed team) and the network as the client sent it.
func TestCreateOnNodeSendsReferences(t *testing.T) {
	s := &Server{secrets: spySecrets{t: t}}
	s.SetNetworkingOnNodes(nil, "")
	no := false
	body := newSandbox{EnvVars: map[string]string{"TOKEN": "${e2b.secrets.api-token}"}, AllowInternetAccess: &no,
		Network: &networkJSON{AllowOut: []string{"10.0.0.1"}}}
	c := &captureCreate{}
	sb, tok, err := s.createOnNode(t.Context(), c, sandbox.CreateRequest{TeamID: "t1", EnvVars: body.EnvVars}, body)
	if err != nil || sb.ID != "sb1" || tok != "tt" {
		t.Fatalf("createOnNode = %+v, %q, %v", sb, tok, err)
	}
	if c.req.EnvVars["TOKEN"] != "${e2b.secrets.api-token}" {
		t.Errorf("envVars sent to the node = %v; want the reference", c.req.EnvVars)
	}
	if string(c.nc.Network) != `{"allowOut":["10.0.0.1"]}` || c.nc.AllowInternetAccess == nil || *c.nc.AllowInternetAccess {
		t.Errorf("network sent to the node = %s, internet %v; want the client's", c.nc.Network, c.nc.AllowInternetAccess)
	}
	// What one box refuses is refused before placement.
	body.Network = &networkJSON{HTTPSPorts: []int{443}}
	if _, _, err := s.createOnNode(t.Context(), c, sandbox.CreateRequest{TeamID: "t1"}, body); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("network.httpsPorts through an api replica = %v; want invalid", err)
	}
}
