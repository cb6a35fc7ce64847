package app

import (
	"crypto/x509"
	"os"
	"testing"

	"github.com/sbxdev/sbx/internal/datadir"
)

// The sandbox host CA issues for <port>-<id>.localhost only, and its name
// constraints make a certificate for any other name fail verification
// even if its key were used to sign one.
func TestHostCAIsLimitedToLocalhost(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadHostCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(datadir.Layout{Root: dir}.SandboxCAKey()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v, %v", fi, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	for name, want := range map[string]bool{"8000-abc.localhost": true, "localhost": false, "a.b.localhost": false, "example.com": false} {
		if got := ca.covers(name); got != want {
			t.Errorf("covers(%q) = %v, want %v", name, got, want)
		}
	}
	leaf, err := ca.leaf("8000-abc.localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "8000-abc.localhost", Roots: roots}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	// Sign a certificate for another name with the CA's key directly.
	evil := *leaf.Leaf
	evil.DNSNames = []string{"example.com"}
	der, err := x509.CreateCertificate(nil, &evil, ca.cert, leaf.Leaf.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots}); err == nil {
		t.Error("a certificate for example.com signed by the sandbox CA verified")
	}
	again, err := loadHostCA(dir)
	if err != nil || !again.cert.Equal(ca.cert) {
		t.Errorf("the CA is not kept across starts: %v", err)
	}
}

func TestLocalhostResolves(t *testing.T) {
	for in, want := range map[string]bool{
		"hosts:          files dns\n":                                     false,
		"hosts:          files myhostname dns\n":                          true,
		"# hosts: myhostname\nhosts: files resolve [!UNAVAIL=return] dns": true,
		"": false,
	} {
		if got := localhostResolves([]byte(in)); got != want {
			t.Errorf("localhostResolves(%q) = %v, want %v", in, got, want)
		}
	}
}
