package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
)

// writeSelfSigned writes a self-signed certificate with serial and its key.
func writeSelfSigned(t *testing.T, serial int64, certFile, keyFile string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sbx"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

func servedSerial(t *testing.T, r *certReloader) int64 {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.Int64()
}

func TestCertReloaderFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeSelfSigned(t, 1, certFile, keyFile)
	cfg := TLSConfig{CertFile: certFile, KeyFile: keyFile}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := newCertReloader(cfg, dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, r); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	// A self-signed certificate is its own trust anchor for sbx env.
	l := datadir.Layout{Root: dir}
	if b, _ := os.ReadFile(l.TLSTrust()); string(b) != string(first) {
		t.Errorf("%s = %q, want the self-signed certificate", l.TLSTrust(), b)
	}
	if b, _ := os.ReadFile(l.TLSBundle()); !strings.HasSuffix(string(b), string(first)) {
		t.Errorf("%s does not end with the certificate", l.TLSBundle())
	}

	// Replaced on disk: picked up at the next handshake after reloadCheck.
	writeSelfSigned(t, 2, certFile, keyFile)
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	if got := servedSerial(t, r); got != 2 {
		t.Fatalf("after the files changed: serial %d, want 2", got)
	}

	// A broken renewal keeps the previous certificate serving.
	if err := os.WriteFile(certFile, []byte("half-written"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
	if got := servedSerial(t, r); got != 2 {
		t.Fatalf("after a broken renewal: serial %d, want 2 still", got)
	}
}

func TestTLSConfigValidate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, 1, certFile, keyFile)
	for _, tc := range []struct {
		cfg  TLSConfig
		want string
	}{
		{TLSConfig{}, ""},
		{TLSConfig{CertFile: certFile}, "--tls-cert and --tls-key go together"},
		{TLSConfig{KeyFile: keyFile}, "--tls-cert and --tls-key go together"},
		{TLSConfig{CAFile: certFile}, "--tls-ca needs --tls-cert"},
		{TLSConfig{CertFile: keyFile, KeyFile: keyFile}, "--tls-cert " + keyFile},
		{TLSConfig{CertFile: certFile, KeyFile: keyFile, CAFile: keyFile}, "--tls-ca " + keyFile},
		{TLSConfig{CertFile: certFile, KeyFile: keyFile, CAFile: certFile}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestSelfClientPinsTheServedCertificate: the loopback client accepts the
// certificate the server serves (names and CAs aside) and nothing else.
func TestSelfClientPinsTheServedCertificate(t *testing.T) {
	dir := t.TempDir()
	serve := func(certFile, keyFile string) (*certReloader, string) {
		r, err := newCertReloader(TLSConfig{CertFile: certFile, KeyFile: keyFile}, dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", r.tlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return r, "https://" + ln.Addr().String()
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeSelfSigned(t, 1, a+".crt", a+".key")
	writeSelfSigned(t, 2, b+".crt", b+".key")
	ra, urlA := serve(a+".crt", a+".key")
	_, urlB := serve(b+".crt", b+".key")

	resp, err := ra.selfClient().Get(urlA)
	if err != nil {
		t.Fatalf("self client to its own server: %v", err)
	}
	resp.Body.Close()
	if resp, err := ra.selfClient().Get(urlB); err == nil {
		resp.Body.Close()
		t.Fatal("self client accepted another server's certificate")
	}
}
