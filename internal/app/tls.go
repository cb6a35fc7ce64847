package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
)

// TLSConfig serves the API, sandbox proxy and dashboard over HTTPS (one
// listener carries all three, so one certificate covers them).
type TLSConfig struct {
	CertFile string // PEM certificate chain, leaf first
	KeyFile  string // PEM private key of the leaf
	// CAFile is the CA clients should trust, when the certificate is
	// issued by a private CA; "" = the chain's last certificate when it is
	// self-signed (recorded for `sbx env`).
	CAFile string
}

// Enabled reports whether the server speaks TLS.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate checks that the flags come together and the pair loads, so a
// wrong path fails at start with the flag's name rather than at the first
// handshake.
func (c TLSConfig) Validate() error {
	if !c.Enabled() {
		if c.CAFile != "" {
			return errors.New("--tls-ca needs --tls-cert and --tls-key")
		}
		return nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("--tls-cert and --tls-key go together: give both (PEM files)")
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.CertFile, c.KeyFile, err)
	}
	if c.CAFile != "" {
		if _, err := readCerts(c.CAFile); err != nil {
			return fmt.Errorf("--tls-ca %s: %w", c.CAFile, err)
		}
	}
	return nil
}

// certReloader hands the current certificate to every handshake. It
// reloads the pair on SIGHUP and, at most every reloadCheck, when either
// file's modification time or size changed (certbot and cert-manager
// replace files in place). A pair that fails to load keeps the old one
// serving and is logged: a half-written renewal must not take the API down.
type certReloader struct {
	cfg     TLSConfig
	dataDir string
	log     *slog.Logger
	local   *hostCA // issues sandbox host names under localhost; nil = none

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

const reloadCheck = 2 * time.Second

func newCertReloader(cfg TLSConfig, dataDir string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{cfg: cfg, dataDir: dataDir, log: log}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// stampOf changes whenever either file is replaced or rewritten.
func (r *certReloader) stampOf() string {
	var b bytes.Buffer
	for _, f := range []string{r.cfg.CertFile, r.cfg.KeyFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

func (r *certReloader) reload() error {
	stamp := r.stampOf()
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	if err := writeTrust(r.dataDir, r.cfg, cert, r.local); err != nil {
		return fmt.Errorf("record the TLS trust anchor for sbx env: %w", err)
	}
	r.mu.Lock()
	r.cert, r.stamp, r.checked = &cert, stamp, time.Now()
	r.mu.Unlock()
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		r.log.Info("TLS certificate loaded", "subject", leaf.Subject.String(), "dns", leaf.DNSNames,
			"ips", leaf.IPAddresses, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// withHostCA makes the reloader answer sandbox host names under localhost
// that the operator's certificate does not cover with the data dir's
// sandbox CA (sandboxtls.go), and tells clients to trust it.
func (r *certReloader) withHostCA() error {
	ca, err := loadHostCA(r.dataDir)
	if err != nil {
		return err
	}
	r.local = ca
	return r.reload()
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if r.local != nil && hello != nil && r.local.covers(hello.ServerName) {
		r.mu.Lock()
		cur := r.cert
		r.mu.Unlock()
		if leaf, err := x509.ParseCertificate(cur.Certificate[0]); err != nil || leaf.VerifyHostname(hello.ServerName) != nil {
			return r.local.leaf(hello.ServerName)
		}
	}
	r.mu.Lock()
	due := time.Since(r.checked) >= reloadCheck
	if due {
		r.checked = time.Now()
	}
	cert, stamp := r.cert, r.stamp
	r.mu.Unlock()
	if due && r.stampOf() != stamp {
		if err := r.reload(); err != nil {
			r.log.Error("TLS certificate changed on disk but does not load; still serving the previous one", "err", err)
		} else {
			r.mu.Lock()
			cert = r.cert
			r.mu.Unlock()
		}
	}
	return cert, nil
}

// watchSIGHUP reloads the certificate (r, nil without TLS) on SIGHUP
// until ctx ends.
func watchSIGHUP(ctx context.Context, r *certReloader, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				if r == nil {
					log.Info("SIGHUP: nothing to reload (no --tls-cert)")
					continue
				}
				if err := r.reload(); err != nil {
					log.Error("SIGHUP: TLS certificate not reloaded; still serving the previous one", "err", err)
				}
			}
		}
	}()
}

func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// writeTrust records what `sbx env` tells clients to trust: the --tls-ca,
// else the chain's last certificate when it is self-signed (a CA or a
// self-signed leaf). A chain ending at a certificate some other CA signed
// records nothing: either the system trusts that CA already, or the
// operator must say which with --tls-ca.
func writeTrust(dataDir string, cfg TLSConfig, cert tls.Certificate, local *hostCA) error {
	l := datadir.Layout{Root: dataDir}
	var anchors []*x509.Certificate
	if cfg.CAFile != "" {
		cs, err := readCerts(cfg.CAFile)
		if err != nil {
			return err
		}
		anchors = cs
	} else if last, err := x509.ParseCertificate(cert.Certificate[len(cert.Certificate)-1]); err == nil && selfSigned(last) {
		anchors = []*x509.Certificate{last}
	}
	if local != nil {
		anchors = append(anchors, local.cert)
	}
	if len(anchors) == 0 {
		for _, f := range []string{l.TLSTrust(), l.TLSBundle()} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	var ca bytes.Buffer
	for _, c := range anchors {
		pem.Encode(&ca, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	bundle := systemRoots()
	bundle = append(bundle, ca.Bytes()...)
	if err := writePublic(l.TLSTrust(), ca.Bytes()); err != nil {
		return err
	}
	return writePublic(l.TLSBundle(), bundle)
}

// selfSigned reports whether c signed itself. Not CheckSignatureFrom: it
// also wants c to be a CA, and a self-signed leaf (mkcert-style, or
// openssl's with CA:FALSE) is still its own anchor.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// systemRoots is Debian's CA bundle (ca-certificates), or nothing.
func systemRoots() []byte {
	for _, f := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"} {
		if b, err := os.ReadFile(f); err == nil {
			if len(b) > 0 && b[len(b)-1] != '\n' {
				b = append(b, '\n')
			}
			return b
		}
	}
	return nil
}

// writePublic replaces path atomically with a world-readable file: a
// certificate is public, and users other than root point their SDKs at it.
func writePublic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block in the file")
	}
	return out, nil
}

// selfClient is an HTTPS client for the server's own API that accepts
// exactly the leaf certificate being served now: names and CAs do not
// matter on a loopback call to ourselves, and pinning the leaf still
// refuses anything else that might answer on the address.
func (r *certReloader) selfClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection's pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			r.mu.Lock()
			want := r.cert.Certificate[0]
			r.mu.Unlock()
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errors.New("the server's own address answered with a certificate it does not serve")
			}
			return nil
		},
	}
	return &http.Client{Transport: t}
}
