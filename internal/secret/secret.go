// Package secret keeps teams' secrets (E2B's /secrets): values are
// encrypted at rest with AES-256-GCM under a key held in a file of the
// data dir (0600, made on first use), never in the database, and are
// only ever decrypted to be resolved into a sandbox of the same team.
// No read surface returns a value.
package secret

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Secret is a secret's metadata. The value is not part of it.
type Secret struct {
	ID        string
	TeamID    string
	Name      string
	Metadata  map[string]string
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Sealed is a stored secret: metadata and ciphertext.
type Sealed struct {
	Secret
	Ciphertext string
}

// Repository stores sealed secrets (sqlstore.Secrets). Get and Delete
// find a secret by ID or by name, within the team only.
type Repository interface {
	Insert(ctx context.Context, s Sealed) error
	Update(ctx context.Context, s Sealed) error
	Get(ctx context.Context, teamID, ref string) (Sealed, error)
	List(ctx context.Context, teamID, after string, limit int) ([]Secret, error)
	Delete(ctx context.Context, teamID, ref string) error
}

// Limits.
const (
	MaxValueBytes = 64 << 10
	MaxNameLen    = 128
	idPrefix      = "sec_"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Service creates, updates and resolves secrets.
type Service struct {
	repo Repository
	aead cipher.AEAD
	now  func() time.Time
}

// New returns a service whose key is the file at keyPath, created (32
// random bytes, 0600) when missing.
func New(repo Repository, keyPath string) (*Service, error) {
	key, err := loadKey(keyPath)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Service{repo: repo, aead: aead, now: time.Now}, nil
}

// Sampler gives the stored secret written last (sqlstore.Secrets).
type Sampler interface {
	Newest(ctx context.Context) (Sealed, error)
}

// CheckKey tells whether this service's key opens the secret written
// last. Processes sharing a database (api replicas and nodes) must hold
// the same key file: with another one, secrets stored through one
// process cannot be resolved by another, and the creates naming them
// fail. Nothing stored yet passes.
func (sv *Service) CheckKey(ctx context.Context, s Sampler) error {
	x, err := s.Newest(ctx)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := sv.open(x); err != nil {
		return fmt.Errorf("this process's secrets.key does not open the team secrets in the database "+
			"(give every api replica and node the same secrets.key): %w", err)
	}
	return nil
}

func loadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) { // another server made it first
			return loadKey(path)
		}
		if err != nil {
			return nil, fmt.Errorf("create the secrets key %s: %w", path, err)
		}
		_, werr := f.Write([]byte(hex.EncodeToString(key)))
		if err := errors.Join(werr, f.Close()); err != nil {
			return nil, fmt.Errorf("write the secrets key %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the secrets key %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("the secrets key %s is not 64 hex digits: restore it from a backup (without it no stored secret can be read)", path)
	}
	return key, nil
}

// aad binds a ciphertext to its row: a value cannot be moved to another
// team's secret, another secret or another version.
func aad(s Secret) []byte {
	return []byte(s.TeamID + "\x00" + s.ID + "\x00" + strconv.FormatInt(s.Version, 10))
}

func (sv *Service) seal(s Secret, value string) string {
	nonce := make([]byte, sv.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(sv.aead.Seal(nonce, nonce, []byte(value), aad(s)))
}

func (sv *Service) open(s Sealed) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s.Ciphertext)
	if err != nil || len(b) < sv.aead.NonceSize() {
		return "", fmt.Errorf("secret %s: corrupt ciphertext", s.ID)
	}
	n := sv.aead.NonceSize()
	plain, err := sv.aead.Open(nil, b[:n], b[n:], aad(s.Secret))
	if err != nil {
		return "", fmt.Errorf("secret %s: cannot decrypt (wrong key file, or the row was altered): %w", s.ID, err)
	}
	return string(plain), nil
}

func checkValue(v string) error {
	if len(v) > MaxValueBytes {
		return errdefs.Invalid("secret value is %d bytes, more than the limit of %d", len(v), MaxValueBytes)
	}
	if strings.ContainsRune(v, 0) {
		return errdefs.Invalid("secret value contains a NUL byte")
	}
	return nil
}

func checkMetadata(m map[string]string) error {
	if len(m) > 64 {
		return errdefs.Invalid("secret metadata has %d keys, more than 64", len(m))
	}
	for k, v := range m {
		if len(k) > 256 || len(v) > 1024 {
			return errdefs.Invalid("secret metadata %q: keys up to 256 and values up to 1024 bytes", k)
		}
	}
	return nil
}

// Create stores a new secret at version 1.
func (sv *Service) Create(ctx context.Context, teamID, name, value string, metadata map[string]string) (Secret, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || len(name) > MaxNameLen || !nameRE.MatchString(name) || strings.HasPrefix(name, idPrefix) {
		return Secret{}, errdefs.Invalid("secret name %q: use 1-%d characters a-z, 0-9, '.', '_' and '-', not starting with %q", name, MaxNameLen, idPrefix)
	}
	if err := errors.Join(checkValue(value), checkMetadata(metadata)); err != nil {
		return Secret{}, err
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	now := sv.now().UTC()
	s := Secret{ID: idPrefix + hex.EncodeToString(b), TeamID: teamID, Name: name, Metadata: metadata,
		Version: 1, CreatedAt: now, UpdatedAt: now}
	if err := sv.repo.Insert(ctx, Sealed{Secret: s, Ciphertext: sv.seal(s, value)}); err != nil {
		return Secret{}, err
	}
	return s, nil
}

// Update stores a new version of the value; metadata replaces the stored
// one when not nil.
func (sv *Service) Update(ctx context.Context, teamID, ref, value string, metadata map[string]string) (Secret, error) {
	if err := errors.Join(checkValue(value), checkMetadata(metadata)); err != nil {
		return Secret{}, err
	}
	cur, err := sv.repo.Get(ctx, teamID, strings.ToLower(ref))
	if err != nil {
		return Secret{}, err
	}
	s := cur.Secret
	s.Version++
	s.UpdatedAt = sv.now().UTC()
	if metadata != nil {
		s.Metadata = metadata
	}
	if err := sv.repo.Update(ctx, Sealed{Secret: s, Ciphertext: sv.seal(s, value)}); err != nil {
		return Secret{}, err
	}
	return s, nil
}

// Get returns a secret's metadata.
func (sv *Service) Get(ctx context.Context, teamID, ref string) (Secret, error) {
	s, err := sv.repo.Get(ctx, teamID, strings.ToLower(ref))
	return s.Secret, err
}

// List returns up to limit secrets by name, after the name after.
func (sv *Service) List(ctx context.Context, teamID, after string, limit int) ([]Secret, error) {
	return sv.repo.List(ctx, teamID, after, limit)
}

// Delete removes a secret and every version of it.
func (sv *Service) Delete(ctx context.Context, teamID, ref string) error {
	return sv.repo.Delete(ctx, teamID, strings.ToLower(ref))
}

// DeleteTeam removes every secret of a team (the team is being deleted:
// its values must not outlive it in the database).
func (sv *Service) DeleteTeam(ctx context.Context, teamID string) error {
	for {
		page, err := sv.repo.List(ctx, teamID, "", 100)
		if err != nil {
			return fmt.Errorf("list secrets of team %s: %w", teamID, err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, x := range page {
			if err := sv.repo.Delete(ctx, teamID, x.ID); err != nil {
				return fmt.Errorf("delete secret %s of team %s: %w", x.Name, teamID, err)
			}
		}
	}
}

// placeholder is what the SDK's Secret.fill(name) makes.
var placeholder = regexp.MustCompile(`\$\{e2b\.secrets\.([^}]*)\}`)

// Resolve replaces each ${e2b.secrets.<name>} in the values of env with
// the team's secret of that name. An unknown name is an error naming it.
func (sv *Service) Resolve(ctx context.Context, teamID string, env map[string]string) (map[string]string, error) {
	var out map[string]string
	for k, v := range env {
		if !strings.Contains(v, "${e2b.secrets.") {
			continue
		}
		var rerr error
		nv := placeholder.ReplaceAllStringFunc(v, func(m string) string {
			name := placeholder.FindStringSubmatch(m)[1]
			s, err := sv.repo.Get(ctx, teamID, strings.ToLower(name))
			if errors.Is(err, errdefs.ErrNotFound) {
				err = errdefs.Invalid("envVars.%s: no secret named %q in your team (create it with Secret.create or `sbx secret create`)", k, name)
			}
			if err == nil {
				var val string
				if val, err = sv.open(s); err == nil {
					return val
				}
			}
			rerr = errors.Join(rerr, err)
			return m
		})
		if rerr != nil {
			return nil, rerr
		}
		if out == nil {
			out = make(map[string]string, len(env))
			for k2, v2 := range env {
				out[k2] = v2
			}
		}
		out[k] = nv
	}
	if out == nil {
		return env, nil
	}
	return out, nil
}
