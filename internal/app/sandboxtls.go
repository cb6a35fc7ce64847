package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
)

// hostCA issues certificates for sandbox host names under "localhost"
// (<port>-<id>.localhost), which no certificate can cover with a wildcard
// that clients accept (Node and browsers refuse "*.localhost": a wildcard
// needs two labels after it). It is a CA of this data dir whose name
// constraints permit "localhost" alone, so trusting it (sbx env adds it to
// NODE_EXTRA_CA_CERTS and SSL_CERT_FILE) lets it vouch for nothing else:
// a stolen key impersonates no real site. Its key is 0600 in the data dir.
type hostCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte

	mu    sync.Mutex
	leafs map[string]*tls.Certificate
}

const (
	hostCAName    = "localhost"
	hostLeafLife  = 30 * 24 * time.Hour
	maxCachedLeaf = 4096
)

// loadHostCA reads the data dir's sandbox CA, making it on first use.
func loadHostCA(dataDir string) (*hostCA, error) {
	l := datadir.Layout{Root: dataDir}
	certPEM, cerr := os.ReadFile(l.SandboxCA())
	keyPEM, kerr := os.ReadFile(l.SandboxCAKey())
	if errors.Is(cerr, os.ErrNotExist) || errors.Is(kerr, os.ErrNotExist) {
		return newHostCA(l)
	}
	if err := errors.Join(cerr, kerr); err != nil {
		return nil, fmt.Errorf("read the sandbox host CA: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("the sandbox host CA %s or its key is not PEM: remove both to make a new one", l.SandboxCA())
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	if time.Until(cert.NotAfter) < hostLeafLife {
		return newHostCA(l)
	}
	return &hostCA{cert: cert, key: key, pem: certPEM, leafs: map[string]*tls.Certificate{}}, nil
}

func newHostCA(l datadir.Layout) (*hostCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber:                serial(),
		Subject:                     pkix.Name{CommonName: "sbx sandbox hosts (localhost only)", Organization: []string{"sbx"}},
		NotBefore:                   now.Add(-time.Hour),
		NotAfter:                    now.AddDate(5, 0, 0),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{hostCAName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeSecret(l.SandboxCAKey(), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))); err != nil {
		return nil, fmt.Errorf("write the sandbox host CA key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writePublic(l.SandboxCA(), certPEM); err != nil {
		return nil, err
	}
	return &hostCA{cert: cert, key: key, pem: certPEM, leafs: map[string]*tls.Certificate{}}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// covers tells whether name is one this CA may issue for.
func (ca *hostCA) covers(name string) bool {
	return strings.HasSuffix(name, "."+hostCAName) && !strings.Contains(strings.TrimSuffix(name, "."+hostCAName), ".")
}

// leaf returns a certificate for exactly name, cached.
func (ca *hostCA) leaf(name string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leafs[name]; ok && time.Until(c.Leaf.NotAfter) > time.Hour {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(hostLeafLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	if len(ca.leafs) >= maxCachedLeaf {
		clear(ca.leafs)
	}
	ca.leafs[name] = c
	return c, nil
}
