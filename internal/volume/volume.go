// Package volume keeps teams' persistent volumes (E2B's /volumes): file
// systems that outlive sandboxes, mounted into sandboxes at create and
// read and written through the /volumecontent API.
//
// Each volume is a sparse ext4 image in the data dir (volumes/<id>.img),
// loop-mounted on the host at volumes/mnt/<id> with nosuid,nodev,noexec
// while the server runs. The image's size is the volume's cap: a sandbox
// filling it gets ENOSPC, never the host's disk. Files in it carry the
// ids a sandbox sees (0 = root, 1000 = user); a sandbox in a user
// namespace gets the volume through an idmapped mount, so its root is
// root there too. Sandboxes write volumes, so the host never resolves a
// path in one by name: the content API goes through internal/hostfs, and
// a planted symlink or a hard link cannot lead outside the image's own
// file system.
package volume

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// IDPrefix starts every volume ID.
const IDPrefix = "vol_"

// Volume is a team volume.
type Volume struct {
	ID        string
	TeamID    string
	Name      string
	Token     string // authorizes /volumecontent/<ID>
	SizeMB    int64
	CreatedAt time.Time
	// NodeID is the node whose data dir holds the image (--node-name of
	// a --role node); "" on a single box. Volumes do not move: sandboxes
	// mounting one are placed on its node.
	NodeID string
}

// Repository stores volumes (sqlstore.Volumes).
type Repository interface {
	Insert(ctx context.Context, v Volume) error
	// Get finds one of the team's volumes by ID or name.
	Get(ctx context.Context, teamID, ref string) (Volume, error)
	// ByID finds a volume of any team.
	ByID(ctx context.Context, id string) (Volume, error)
	List(ctx context.Context, teamID string) ([]Volume, error)
	Delete(ctx context.Context, teamID, id string) error
}

// Config is the volumes' part of the server configuration.
type Config struct {
	Dir        string // <data-dir>/volumes
	SizeMB     int64  // each volume's size (default DefaultSizeMB)
	MaxPerTeam int    // default DefaultMaxPerTeam
	// Node is this server's name when it is a cluster node: recorded in
	// the volumes it creates, and a volume of another node is refused
	// (its image is not here). "" on a single box.
	Node string
}

// Defaults.
const (
	DefaultSizeMB     = 1024
	DefaultMaxPerTeam = 64
	// DefaultUID owns a new volume's root and the files the content API
	// writes unless told otherwise: the sandbox's default user, who can
	// then use it without sudo.
	DefaultUID = 1000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Service creates, mounts and removes volumes.
type Service struct {
	cfg  Config
	repo Repository
	log  *slog.Logger
	now  func() time.Time
	mu   sync.Mutex // serializes mounts
}

// New returns the service; Dir is created 0700.
func New(cfg Config, repo Repository, log *slog.Logger) (*Service, error) {
	if cfg.SizeMB <= 0 {
		cfg.SizeMB = DefaultSizeMB
	}
	if cfg.MaxPerTeam <= 0 {
		cfg.MaxPerTeam = DefaultMaxPerTeam
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "mnt"), 0o700); err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o711); err != nil { // sandbox uids traverse to nothing here; mounts are idmapped clones
		return nil, err
	}
	return &Service{cfg: cfg, repo: repo, log: log, now: time.Now}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Service) image(id string) string { return filepath.Join(s.cfg.Dir, id+".img") }
func (s *Service) mount(id string) string { return filepath.Join(s.cfg.Dir, "mnt", id) }

// Create makes a volume: its row, its image and file system, mounted.
func (s *Service) Create(ctx context.Context, teamID, name string) (Volume, error) {
	if !nameRE.MatchString(name) {
		return Volume{}, errdefs.Invalid("volume name %q: use 1-64 characters A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit", name)
	}
	if list, err := s.repo.List(ctx, teamID); err != nil {
		return Volume{}, err
	} else if len(list) >= s.cfg.MaxPerTeam {
		return Volume{}, errdefs.Exhausted("your team has %d volumes, the limit: delete one first", len(list))
	}
	v := Volume{ID: IDPrefix + randomHex(10), TeamID: teamID, Name: name, Token: "vtk_" + randomHex(24),
		SizeMB: s.cfg.SizeMB, CreatedAt: s.now().UTC(), NodeID: s.cfg.Node}
	if err := s.repo.Insert(ctx, v); err != nil {
		return Volume{}, err
	}
	if err := s.makeFS(ctx, v); err != nil {
		_ = s.repo.Delete(context.WithoutCancel(ctx), teamID, v.ID)
		s.removeFiles(v.ID)
		return Volume{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	return v, nil
}

func (s *Service) makeFS(ctx context.Context, v Volume) error {
	f, err := os.OpenFile(s.image(v.ID), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(v.SizeMB << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	owner := fmt.Sprintf("root_owner=%d:%d", DefaultUID, DefaultUID)
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", owner, s.image(v.ID)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := s.ensureMounted(ctx, v.ID); err != nil {
		return err
	}
	// Nothing of the host's in a new volume: not even lost+found.
	return unix.Rmdir(filepath.Join(s.mount(v.ID), "lost+found"))
}

// ensureMounted mounts the volume's image on the host if it is not. The
// host mount is never taken down while the image exists (not even at
// shutdown): sandboxes' mounts share its file system, and mounting the
// image a second time beside a live one would corrupt it.
func (s *Service) ensureMounted(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.mount(id)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if mounted(dir) {
		return nil
	}
	if _, err := os.Stat(s.image(id)); err != nil {
		return fmt.Errorf("volume %s has no image on this server: %w", id, err)
	}
	out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noexec", s.image(id), dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount volume %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mounted tells whether dir is a mount point (its device differs from
// its parent's).
func mounted(dir string) bool {
	var a, b unix.Stat_t
	if unix.Lstat(dir, &a) != nil || unix.Lstat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// Get returns one of the team's volumes by ID or name.
func (s *Service) Get(ctx context.Context, teamID, ref string) (Volume, error) {
	return s.repo.Get(ctx, teamID, ref)
}

// List returns the team's volumes.
func (s *Service) List(ctx context.Context, teamID string) ([]Volume, error) {
	return s.repo.List(ctx, teamID)
}

// Delete removes a volume and its content. Sandboxes that mount it keep
// their mount until they end (the host's is detached lazily).
func (s *Service) Delete(ctx context.Context, teamID, ref string) error {
	v, err := s.repo.Get(ctx, teamID, ref)
	if err != nil {
		return err
	}
	if err := s.local(v); err != nil {
		return err
	}
	if err := s.repo.Delete(ctx, teamID, v.ID); err != nil {
		return err
	}
	s.removeFiles(v.ID)
	return nil
}

// local refuses a volume another node holds: its image is in that
// node's data dir (api replicas send its calls there).
func (s *Service) local(v Volume) error {
	if v.NodeID != "" && v.NodeID != s.cfg.Node {
		return errdefs.Precondition("volume %s is kept on node %s, not on this one (%s)", v.Name, v.NodeID, s.cfg.Node)
	}
	return nil
}

// DeleteTeam removes every volume of a team and its content (the team is
// being deleted).
func (s *Service) DeleteTeam(ctx context.Context, teamID string) error {
	vols, err := s.repo.List(ctx, teamID)
	if err != nil {
		return fmt.Errorf("list volumes of team %s: %w", teamID, err)
	}
	for _, v := range vols {
		if s.local(v) != nil {
			continue // its image is on its node, which the caller asks (cluster.Volumes.DeleteTeam)
		}
		if err := s.repo.Delete(ctx, teamID, v.ID); err != nil {
			return fmt.Errorf("delete volume %s of team %s: %w", v.Name, teamID, err)
		}
		s.removeFiles(v.ID)
	}
	return nil
}

func (s *Service) removeFiles(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.mount(id)
	for mounted(dir) {
		// The loop device goes with the last user (mount -o loop sets
		// autoclear).
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			s.log.Warn("unmount a deleted volume", "volume.id", id, "err", err)
			break
		}
	}
	_ = os.Remove(dir)
	if err := os.Remove(s.image(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove a deleted volume's image", "volume.id", id, "err", err)
	}
}

// Authorize returns the volume whose token is token (content API).
func (s *Service) Authorize(ctx context.Context, id, token string) (Volume, error) {
	denied := errdefs.Unauthenticated("volume %q: send its token (from GET /volumes/{id}) as Authorization: Bearer <token>", id)
	if token == "" || !strings.HasPrefix(id, IDPrefix) {
		return Volume{}, denied
	}
	v, err := s.repo.ByID(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return Volume{}, denied
	}
	if err != nil {
		return Volume{}, err
	}
	if subtle.ConstantTimeCompare([]byte(v.Token), []byte(token)) != 1 {
		return Volume{}, denied
	}
	return v, s.local(v)
}

// Root opens the volume's mounted file system (the host side of the
// content API); the caller closes it.
func (s *Service) Root(ctx context.Context, id string) (*hostfs.Dir, error) {
	if err := s.ensureMounted(ctx, id); err != nil {
		return nil, err
	}
	return hostfs.OpenDir(s.mount(id))
}

// MountSource returns the host directory to bind into a sandbox for one
// of the team's volumes (by name or ID), mounted.
func (s *Service) MountSource(ctx context.Context, teamID, ref string) (Volume, string, error) {
	v, err := s.repo.Get(ctx, teamID, ref)
	if err != nil {
		return v, "", err
	}
	if err := s.local(v); err != nil {
		return v, "", err
	}
	if err := s.ensureMounted(ctx, v.ID); err != nil {
		return v, "", err
	}
	return v, s.mount(v.ID), nil
}
