// Package chart_test renders the sbx Helm chart with Helm's own Go library
// and submits every object it renders to a real kube-apiserver (envtest)
// with a server-side dry run, so a manifest the API server would refuse
// (a bad field, a wrong type, an invalid selector) fails here, not at a
// user's helm install.
package chart_test

import (
	"errors"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"

	"github.com/sbxdev/sbx/internal/testenv"
)

const namespace = "sbx-chart-test"

// rendered is one object of a rendering, with the template it came from.
type rendered struct {
	source string
	obj    *unstructured.Unstructured
}

// render renders the chart in this directory as `helm install sbx .
// --namespace sbx-chart-test` would, with vals over values.yaml.
func render(t *testing.T, vals map[string]any) []rendered {
	t.Helper()
	ch, err := loader.Load(".")
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	top, err := chartutil.ToRenderValues(ch, vals,
		common.ReleaseOptions{Name: "sbx", Namespace: namespace, Revision: 1, IsInstall: true}, nil)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		t.Fatalf("render chart: %v", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []rendered
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, helpers
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(files[name]), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", name, err, files[name])
			}
			if len(m) == 0 {
				continue // an empty document (a disabled template)
			}
			out = append(out, rendered{source: name, obj: &unstructured.Unstructured{Object: m}})
		}
	}
	if len(out) == 0 {
		t.Fatal("the chart rendered nothing")
	}
	return out
}

// find returns the one object of kind whose name ends in suffix, as T.
func find[T any](t *testing.T, objs []rendered, kind, suffix string) *T {
	t.Helper()
	var found []*T
	for _, r := range objs {
		if r.obj.GetKind() != kind || !strings.HasSuffix(r.obj.GetName(), suffix) {
			continue
		}
		v := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(r.obj.Object, v, true); err != nil {
			t.Fatalf("%s %s (%s): %v", kind, r.obj.GetName(), r.source, err)
		}
		found = append(found, v)
	}
	if len(found) != 1 {
		t.Fatalf("want one %s named *%s, the chart rendered %d", kind, suffix, len(found))
	}
	return found[0]
}

var nonDefault = map[string]any{
	"domain":       "sandboxes.corp.test",
	"coordination": "auto",
	"database":     map[string]any{"existingSecret": "pg", "key": "url"},
	"blobStore": map[string]any{"url": "s3://sbx?endpoint=http://seaweed.storage:8333&region=us-east-1",
		"existingSecret": "s3-creds"},
	"clusterSecret":  map[string]any{"existingSecret": "cluster-shared"},
	"keys":           map[string]any{"existingSecret": "sbx-keys"},
	"tls":            map[string]any{"existingSecret": "sbx-pod-tls"},
	"serviceAccount": map[string]any{"create": false, "name": "sbx-runner"},
	"image":          map[string]any{"repository": "registry.corp.test/sbx", "tag": "0.17.1", "pullPolicy": "Always"},
	"api": map[string]any{"replicas": 3, "extraArgs": []any{"--team-max-sandboxes=200"},
		"resources": map[string]any{"limits": map[string]any{"cpu": "2", "memory": "2Gi"}},
		"pdb":       map[string]any{"maxUnavailable": 2}},
	"node": map[string]any{"hostNetwork": false, "runtime": "runsc", "dataDir": "/srv/sbx",
		"nodeSelector": map[string]any{"sbx.dev/sandboxes": "true"},
		"tolerations":  []any{map[string]any{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"}}},
	"ingress": map[string]any{"className": "nginx", "host": "api.corp.test", "tls": map[string]any{"secretName": "wildcard"}},
}

func TestChart(t *testing.T) {
	cases := []struct {
		name string
		vals map[string]any
	}{{"Defaults", nil}, {"NonDefault", nonDefault}}
	var objs [][]rendered
	for _, c := range cases {
		t.Run("Render"+c.name, func(t *testing.T) {
			r := render(t, c.vals)
			checkEssentials(t, r, c.vals)
			objs = append(objs, r)
		})
	}
	t.Run("BadValuesRefused", testBadValues)
	if t.Failed() {
		return
	}
	// One API server for every case: its start is most of this test's time.
	testenv.Require(t, testenv.KubeAPIServer)
	cfg := startAPIServer(t)
	for i, c := range cases {
		t.Run("DryRun"+c.name, func(t *testing.T) { dryRun(t, cfg, objs[i]) })
	}
}

// testBadValues: values.schema.json refuses, before anything renders,
// values sbx would refuse at start (or that would run it unsafely).
func testBadValues(t *testing.T) {
	ch, err := loader.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, vals := range []map[string]any{
		{"coordination": "etcd"},
		{"api": map[string]any{"replicas": 0}},
		{"node": map[string]any{"hostNetwork": "yes"}},
		{"node": map[string]any{"runtime": "docker"}},
		{"node": map[string]any{"dataDir": "relative/dir"}},
		{"domain": "https://sbx.example.com"},
		{"database": map[string]any{"existingSecret": ""}},
		{"blobStore": map[string]any{"url": "minio://bucket"}},
	} {
		_, err := chartutil.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "sbx", Namespace: namespace, IsInstall: true}, nil)
		if err == nil {
			t.Errorf("values %v were accepted", vals)
		} else {
			t.Logf("%v: %v", vals, strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
}

// checkEssentials checks what the issue asks of the chart, and that no
// secret value is in a manifest.
func checkEssentials(t *testing.T, objs []rendered, vals map[string]any) {
	api := find[appsv1.Deployment](t, objs, "Deployment", "-api")
	if r := api.Spec.Replicas; r == nil || *r < 2 {
		t.Errorf("API replicas %v, want at least 2", r)
	}
	pdb := find[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "-api")
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(api.Spec.Template.Labels)) {
		t.Errorf("the PDB's selector %s does not select the API pods (%v)", sel, api.Spec.Template.Labels)
	}
	node := find[appsv1.DaemonSet](t, objs, "DaemonSet", "-node")
	if sel.Matches(labels.Set(node.Spec.Template.Labels)) {
		t.Errorf("the API PDB's selector %s also selects node pods", sel)
	}
	nc := node.Spec.Template.Spec.Containers[0]
	if sc := nc.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("the node DaemonSet is not privileged: %+v", sc)
	}
	if !node.Spec.Template.Spec.HostPID {
		t.Error("the node DaemonSet does not share the host's PID namespace: its sandboxes would die with the Pod")
	}
	ac := api.Spec.Template.Spec.Containers[0]
	if sc := ac.SecurityContext; sc == nil || (sc.Privileged != nil && *sc.Privileged) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("the API pods run no sandbox and should get no privilege: %+v", sc)
	}
	for _, c := range []struct {
		role string
		ctr  corev1.Container
	}{{"api", ac}, {"node", nc}} {
		args := strings.Join(c.ctr.Args, " ")
		for _, want := range []string{"serve", "--role=" + c.role, "--cluster-secret-file=/etc/sbx/cluster/",
			"--node-name=$(", "--coordination="} {
			if !strings.Contains(args, want) {
				t.Errorf("%s args %q lack %q", c.role, args, want)
			}
		}
		// Where api replicas reach a node; sbx serve refuses it on an
		// api replica (nothing dials those).
		if got := strings.Contains(args, "--advertise-url="); got != (c.role == "node") {
			t.Errorf("%s args %q: --advertise-url given = %v, want it on nodes only", c.role, args, got)
		}
		for _, p := range []*corev1.Probe{c.ctr.ReadinessProbe, c.ctr.LivenessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" {
				t.Errorf("%s: want readiness and liveness probes on /health, got %+v", c.role, p)
			}
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.ctr.Env {
			env[e.Name] = e
		}
		for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"} {
			if e := env[name]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
				t.Errorf("%s: %s is not %s from the downward API: %+v", c.role, name, field, e)
			}
		}
		if e := env["SBX_DATABASE"]; e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: the database DSN must come from a Secret: %+v", c.role, e)
		}
		if vals != nil {
			for _, name := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
				if e := env[name]; e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "s3-creds" {
					t.Errorf("%s: %s must come from the s3-creds Secret: %+v", c.role, name, e)
				}
			}
			for _, want := range []string{"--blob-store=s3://sbx?", "--tls-cert=", "--domain=sandboxes.corp.test"} {
				if !strings.Contains(args, want) {
					t.Errorf("%s args %q lack %q", c.role, args, want)
				}
			}
		}
	}
	if nc.Args[0] != "serve" || !strings.Contains(strings.Join(nc.Args, " "), "--node-name=$(NODE_NAME)") {
		t.Errorf("a node's name must be its Kubernetes node's (stable across Pod restarts): %q", nc.Args)
	}

	ing := find[networkingv1.Ingress](t, objs, "Ingress", "sbx")
	var hosts []string
	for _, r := range ing.Spec.Rules {
		hosts = append(hosts, r.Host)
	}
	domain := "sbx.example.com"
	if vals != nil {
		domain = vals["domain"].(string)
	}
	if len(hosts) != 2 || hosts[1] != "*."+domain {
		t.Errorf("Ingress hosts %q, want the API host and *.%s", hosts, domain)
	}

	role := find[rbacv1.Role](t, objs, "Role", "sbx")
	leases := false
	for _, r := range role.Rules {
		if len(r.APIGroups) == 1 && r.APIGroups[0] == "coordination.k8s.io" && len(r.Resources) == 1 && r.Resources[0] == "leases" {
			leases = true
		}
	}
	if !leases {
		t.Errorf("the Role does not allow Leases: %+v", role.Rules)
	}

	// Every process on the database reads one admin key and one secrets
	// key: each would otherwise make its own at start.
	for _, c := range []struct {
		role string
		spec corev1.PodSpec
	}{{"api", api.Spec.Template.Spec}, {"node", node.Spec.Template.Spec}} {
		keysSecret := ""
		for _, v := range c.spec.Volumes {
			if v.Name == "keys" && v.Secret != nil {
				keysSecret = v.Secret.SecretName
			}
		}
		if keysSecret == "" {
			t.Errorf("%s: no keys volume from a Secret", c.role)
		}
		mounted := map[string]bool{}
		for _, m := range c.spec.Containers[0].VolumeMounts {
			if m.Name == "keys" && m.ReadOnly {
				mounted[m.SubPath] = strings.HasPrefix(m.MountPath, "/") && strings.HasSuffix(m.MountPath, "/"+m.SubPath)
			}
		}
		if !mounted["admin-key"] || !mounted["secrets.key"] {
			t.Errorf("%s: admin-key and secrets.key are not mounted read-only into the data dir: %v", c.role, mounted)
		}
	}
	if vals == nil {
		keys := find[corev1.Secret](t, objs, "Secret", "-keys")
		admin, sealing := string(keys.Data["admin-key"]), string(keys.Data["secrets.key"])
		if !regexp.MustCompile(`^sbx_admin_[0-9a-f]{40}$`).MatchString(admin) || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sealing) {
			t.Errorf("generated keys: admin-key %q, secrets.key %q; want sbx_admin_ + 40 hex digits and 64 hex digits", admin, sealing)
		}
	}

	// No manifest carries a secret: the test's secret-like values are
	// names of Secrets, so the only data allowed is in the Secrets the
	// default install generates.
	for _, r := range objs {
		if r.obj.GetKind() == "Secret" {
			if vals != nil {
				t.Errorf("with clusterSecret.existingSecret set, the chart rendered Secret %s", r.obj.GetName())
			}
			continue
		}
		manifest := strings.ToLower(string(mustJSON(t, r.obj)))
		for _, leak := range []string{"postgres://", "password", "secretaccesskey\":\""} {
			if strings.Contains(manifest, leak) {
				t.Errorf("%s %s (%s) holds %q: secrets belong in Secrets", r.obj.GetKind(), r.obj.GetName(), r.source, leak)
			}
		}
	}
}

func mustJSON(t *testing.T, u *unstructured.Unstructured) []byte {
	b, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	env := &envtest.Environment{BinaryAssetsDirectory: os.Getenv("KUBEBUILDER_ASSETS")}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return cfg
}

// dryRun creates every object with dryRun=All and strict field validation:
// the API server runs defaulting, validation and admission and stores
// nothing; an unknown or duplicated field is an error, not a warning.
func dryRun(t *testing.T, cfg *rest.Config, objs []rendered) {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	passed := 0
	for _, r := range objs {
		obj := r.obj.DeepCopy()
		if obj.GetNamespace() == "" {
			obj.SetNamespace(namespace) // as helm install --namespace does
		}
		if err := c.Create(t.Context(), obj, client.DryRunAll, client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
			t.Errorf("the API server refused %s %s (%s): %v", obj.GetKind(), obj.GetName(), r.source, err)
			continue
		}
		passed++
	}
	t.Logf("%d of %d objects passed a server-side dry run", passed, len(objs))
}
