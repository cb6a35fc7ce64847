package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// testCA is a private CA made for one test, like an operator's own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sbx test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue writes a leaf for 127.0.0.1 with the given serial to certFile and
// keyFile (replacing them the way certbot does: write, then rename).
func (ca *testCA) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sbx"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEMFile(t, keyFile, "EC PRIVATE KEY", kder)
	writePEMFile(t, certFile, "CERTIFICATE", der)
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedSerial is the serial of the certificate the server presents now.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLS serves the API and the sandbox proxy over HTTPS with a
// certificate from a private CA, and drives both through the Go SDK and the
// official E2B JavaScript SDK, trusting the CA only through what `sbx env`
// prints. Then it renews the certificate and checks SIGHUP swaps it in
// without a restart.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEMFile(t, caFile, "CERTIFICATE", ca.cert.Raw)
	ca.issue(t, 100, certFile, keyFile)
	s := harness.StartServer(t, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("harness URL %s, want https", s.URL)
	}

	// Plain HTTP on the TLS port gets no API.
	if resp, err := http.Get("http://" + s.Addr + "/v2/sandboxes"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %s, want 400", resp.Status)
		}
	}

	// sbx env names the https URL and the trust files, which hold the CA.
	env := map[string]string{}
	out := s.Run(t, "env", "--data-dir", s.DataDir)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		env[k] = v
	}
	if env["E2B_API_URL"] != s.URL {
		t.Fatalf("sbx env E2B_API_URL=%q, want %q\n%s", env["E2B_API_URL"], s.URL, out)
	}
	caPEM, _ := os.ReadFile(caFile)
	for _, k := range []string{"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"} {
		b, err := os.ReadFile(env[k])
		if err != nil || !bytes.Contains(b, caPEM) {
			t.Fatalf("sbx env %s=%q: want a file holding the CA (err %v)\n%s", k, env[k], err, out)
		}
	}

	// The Go SDK (harness client trusting the CA): API and envd through the proxy.
	ctx := opCtx(t)
	c := s.Client(t)
	sb, err := c.Create(ctx, sdk.CreateOptions{})
	if err != nil {
		t.Fatalf("create over TLS: %v", err)
	}
	defer sb.Kill(ctx)
	res, err := sb.Commands.Run(ctx, "echo go-over-tls", sdk.RunOptions{})
	if err != nil || strings.TrimSpace(res.Stdout) != "go-over-tls" {
		t.Fatalf("command over TLS: %+v, %v", res, err)
	}

	// The sbx CLI (Go SDK with Go's default trust) with SSL_CERT_FILE from sbx env.
	cli := exec.CommandContext(ctx, s.Bin, "sandbox", "list", "--json")
	cli.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_API_KEY="+s.APIKey, "SSL_CERT_FILE="+env["SSL_CERT_FILE"])
	if b, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(b), sb.ID) {
		t.Errorf("sbx sandbox list over TLS with SSL_CERT_FILE: %v\n%s", err, b)
	}

	// The official JavaScript SDK, trusting the CA via NODE_EXTRA_CA_CERTS.
	runJSOverTLS(t, s, env)

	// Renewal: a new certificate from the same CA, then SIGHUP.
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if got := servedSerial(t, s.Addr, roots); got != 100 {
		t.Fatalf("served serial %d, want 100", got)
	}
	ca.issue(t, 101, certFile, keyFile)
	if err := syscall.Kill(s.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for servedSerial(t, s.Addr, roots) != 101 {
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial 100 after renewal and SIGHUP\n%s", s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.List(ctx, sdk.ListOptions{}); err != nil {
		t.Fatalf("API after the certificate reload: %v", err)
	}
}

// runJSOverTLS creates a sandbox, runs a command and kills it with the
// official E2B JavaScript SDK over https.
func runJSOverTLS(t *testing.T, s *harness.Server, env map[string]string) {
	t.Helper()
	module := filepath.Join(harness.RepoRoot(t), "tests", "e2b-js", "node_modules", "e2b", "dist", "index.mjs")
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("the E2B JS SDK is missing (%v): run `make js-deps`", err)
	}
	script := `
const { Sandbox } = await import(process.argv[1])
const sbx = await Sandbox.create('base')
try {
  const r = await sbx.commands.run('echo js-over-tls')
  // A server in the sandbox at https://<port>-<id>.localhost:<port>, its
  // certificate from the data dir's sandbox CA that sbx env points at.
  await sbx.commands.run('mkdir -p /tmp/w && echo host-over-tls > /tmp/w/i.txt')
  await sbx.commands.run('python3 -m http.server 8000', { background: true, cwd: '/tmp/w', timeoutMs: 0 })
  let host = ''
  for (let i = 0; i < 50 && !host; i++) {
    const res = await fetch('https://' + sbx.getHost(8000) + '/i.txt').catch((e) => ({ err: String(e.cause ?? e) }))
    if (res.status === 200) host = (await res.text()).trim()
    else if (i === 49) host = 'failed: ' + (res.err ?? res.status)
    else await new Promise((ok) => setTimeout(ok, 200))
  }
  console.log(JSON.stringify({ id: sbx.sandboxId, stdout: r.stdout.trim(), host }))
} finally { await sbx.kill() }
`
	cmd := exec.CommandContext(opCtx(t), "node", "--input-type=module", "-e", script, "file://"+module)
	cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_SANDBOX_URL="+s.URL, "E2B_API_KEY="+s.APIKey,
		"NODE_EXTRA_CA_CERTS="+env["NODE_EXTRA_CA_CERTS"])
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"stdout":"js-over-tls"`) {
		t.Fatalf("E2B JS SDK over TLS: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"host":"host-over-tls"`) {
		t.Errorf("fetch(https://${sandbox.getHost(8000)}) over TLS: %s", out)
	}
}
