// Package datadir owns the modes of sbx's data dir (default /var/lib/sbx):
// which entries hold secrets and who may traverse what. Prepare runs at
// every start of the server and of every command that opens the data dir,
// so a data dir created by an older sbx, restored from a backup or
// loosened by hand is tightened before anything reads it.
//
// The paths of the data dir's files are built here too (Layout): the
// control plane's, and the node side's (node.go: the sandbox manager's and
// the dirs the wiring gives the runtime driver and the network). The
// runtime and template packages still build the paths below the dirs they
// are given (docs/architecture.md lists the whole layout).
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Layout names the control plane's files in a data dir.
type Layout struct{ Root string }

func (l Layout) path(name string) string { return filepath.Join(l.Root, name) }

// DB is the SQLite database (and its -wal and -shm files).
func (l Layout) DB() string { return l.path("sbx.db") }

// APIKey is the first team's API key, printed by `sbx env`.
func (l Layout) APIKey() string { return l.path("api-key") }

// AdminKey is the admin key, printed by `sbx env --admin`.
func (l Layout) AdminKey() string { return l.path("admin-key") }

// ServerURL is where the server that last started on this data dir
// listens, for the CLI's admin commands run on the same host.
func (l Layout) ServerURL() string { return l.path("api-url") }

// SandboxDomain records the sandbox domain the server last started on this
// data dir gives clients (E2B_DOMAIN), for `sbx env`.
func (l Layout) SandboxDomain() string { return l.path("sandbox-domain") }

// SecretsKey is the AES-256 key that encrypts team secrets in the
// database (hex, 0600). Losing it loses every stored secret; it is not in
// the database so that a copy of the database alone reveals none.
func (l Layout) SecretsKey() string { return l.path("secrets.key") }

// SandboxCA and SandboxCAKey are the CA that issues certificates for
// sandbox host names under localhost when the server serves HTTPS (its
// certificate is public; its key is 0600).
func (l Layout) SandboxCA() string    { return l.path("sandbox-ca.pem") }
func (l Layout) SandboxCAKey() string { return l.path("sandbox-ca.key") }

// TLSTrust is what clients of a server started with --tls-cert should
// trust when its certificate is not from a public CA: the CA certificate
// (or the self-signed certificate) in PEM, printed by `sbx env` as
// NODE_EXTRA_CA_CERTS. TLSBundle is the system's roots plus it, for
// SSL_CERT_FILE (Go, Python, curl), which replaces the roots rather than
// adding to them. Neither is secret.
func (l Layout) TLSTrust() string  { return l.path("tls-ca.pem") }
func (l Layout) TLSBundle() string { return l.path("tls-bundle.pem") }

// Modes. The data dir itself is 0711, not 0700: sandboxes in user
// namespaces run as unprivileged host uids, and the runtime resolves
// their root filesystem and bind mounts (sandboxes/<id>/rootfs, run/<id>,
// agent/) through this directory as that uid. crun fails with "make rootfs
// private: Permission denied" under a 0700 parent and works under 0711.
// Execute without read lets a uid pass through to a path it knows, never
// list what is here; the secrets are then protected by their own modes.
const (
	RootMode   fs.FileMode = 0o711
	SecretFile fs.FileMode = 0o600
	SecretDir  fs.FileMode = 0o700
)

// secretFiles are files (directly in the data dir) only root may read:
// API key hashes, every sandbox's env vars and access token (sbx.db),
// the keys themselves.
var secretFiles = []string{"sbx.db", "sbx.db-wal", "sbx.db-shm", "sbx.db-journal", "api-key", "admin-key", "api-url", "secrets.key", "sandbox-ca.key"}

// secretDirs hold secrets throughout and are never entered by a sandbox:
// saved runtime specs with env vars (specs), memory images and specs of
// paused and snapshotted sandboxes (checkpoints, snapshots), tenants'
// uploaded build contexts (uploads), the filesystems of sandboxes paused
// without memory (sandbox-layers) and of sandbox snapshots
// (sandbox-snapshots).
var secretDirs = []string{"specs", "checkpoints", "snapshots", "uploads", "sandbox-layers", "sandbox-snapshots",
	"blobs", "blob-cache", "blob-spool"} // blobs: the layers above, published (internal/blob)

// shared are entries sandboxes read through bind mounts as their own
// unprivileged uid: their modes are the owner's (agent/ must stay 0755
// with 0755 binaries, which every sandbox executes).
var shared = map[string]bool{"agent": true}

// Prepare creates the data dir if needed and sets its modes: the dir to
// RootMode, secret files to 0600 and secret dirs to 0700, and
// every other entry loses group and other read and write bits (keeping
// execute, which sandboxes in user namespaces need on the directories on
// their paths). Below the root it never widens a mode, and it never
// follows a symlink.
func Prepare(root string, log *slog.Logger) error {
	if err := os.MkdirAll(root, RootMode); err != nil {
		return fmt.Errorf("create data dir %s: %w", root, err)
	}
	// The root is set, not just tightened: a 0700 data dir (what sbx made
	// before user namespaces) would lock the sandboxes out of their rootfs.
	if fi, err := os.Stat(root); err != nil {
		return fmt.Errorf("check data dir %s: %w", root, err)
	} else if fi.Mode().Perm() != RootMode {
		if err := os.Chmod(root, RootMode); err != nil {
			return fmt.Errorf("set mode of data dir %s: %w", root, err)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("read data dir %s: %w", root, err)
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(root, name)
		switch {
		case shared[name] || e.Type()&fs.ModeSymlink != 0:
		case isNamespace(p):
			// A pinned namespace (netns.mnt, internal/network): its
			// mode is the kernel's (0444), and opening it grants
			// nothing without CAP_SYS_ADMIN.
		case slices.Contains(secretFiles, name):
			err = tighten(p, SecretFile, log)
		case slices.Contains(secretDirs, name):
			err = tighten(p, SecretDir, log)
			if err == nil && name == "specs" {
				err = tightenFiles(p, SecretFile, log)
			}
		default:
			err = tighten(p, 0o711, log)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// EnsureSecretDir creates (or tightens) a secret directory of the data dir.
func EnsureSecretDir(p string) error {
	if err := os.MkdirAll(p, SecretDir); err != nil {
		return err
	}
	return os.Chmod(p, SecretDir)
}

// tighten removes from p's mode every permission bit max does not have.
func tighten(p string, max fs.FileMode, log *slog.Logger) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check mode of %s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	mode := fi.Mode().Perm()
	if mode&^max == 0 {
		return nil
	}
	want := mode & max
	// Special bits go too: nothing in the data dir needs setuid, setgid
	// or sticky, and chmod with permission bits alone clears them.
	if err := os.Chmod(p, want); err != nil {
		return fmt.Errorf("tighten mode of %s: %w", p, err)
	}
	if log != nil {
		log.Warn("tightened a data dir entry that was too open", "path", p, "was", fmt.Sprintf("%04o", mode), "now", fmt.Sprintf("%04o", want))
	}
	return nil
}

// tightenFiles applies tighten to the regular files directly in dir.
func tightenFiles(dir string, max fs.FileMode, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := tighten(filepath.Join(dir, e.Name()), max, log); err != nil {
				return err
			}
		}
	}
	return nil
}

// isNamespace reports whether p is a namespace file (nsfs) mounted there.
func isNamespace(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.NSFS_MAGIC
}
