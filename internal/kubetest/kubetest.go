// Package kubetest gives tests a real kube-apiserver and etcd (envtest,
// from the per-machine cache scripts/build-kube-tools.sh fills and
// KUBEBUILDER_ASSETS names), as sqldbtest gives them a database.
package kubetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sbxdev/sbx/internal/testenv"
)

// API is a running API server the test stops at its end.
type API struct {
	// Config reaches it as an admin (system:masters).
	Config *rest.Config
	// Kubeconfig is a file holding Config, for processes the test starts
	// ($KUBECONFIG) and for clients built as sbx builds them.
	Kubeconfig string
	Client     kubernetes.Interface
}

// Start starts kube-apiserver and etcd, or skips the test (a failure under
// SBX_REQUIRE_INTEGRATION=1) when KUBEBUILDER_ASSETS does not hold them.
func Start(t testing.TB) *API {
	t.Helper()
	testenv.Require(t, testenv.KubeAPIServer)
	// envtest logs through controller-runtime's logger, which prints a
	// warning with a stack trace into the test's output when none is set.
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{BinaryAssetsDirectory: os.Getenv("KUBEBUILDER_ASSETS")}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "sbx-test", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	a := &API{Kubeconfig: filepath.Join(t.TempDir(), "kubeconfig")}
	if err := os.WriteFile(a.Kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if a.Config, err = clientcmd.BuildConfigFromFlags("", a.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	if a.Client, err = kubernetes.NewForConfig(a.Config); err != nil {
		t.Fatal(err)
	}
	return a
}

// Namespace creates namespace name.
func (a *API) Namespace(t testing.TB, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := a.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}
