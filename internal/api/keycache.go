package api

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// Key cache bounds. Every request carries its key; resolving it costs a
// database read, so answers are kept for keyTTL. The TTL is what makes a
// key revoked behind the server's back (another process on the data dir,
// sqlite3, a restored backup) stop working within a second; revocations
// through this server's API flush the cache at once.
const (
	keyTTL       = 500 * time.Millisecond
	touchEvery   = time.Minute // how stale a key's lastUsed may get
	maxCacheKeys = 100_000     // only valid keys are cached; this bounds a pathological number of them
)

type keyCache struct {
	keys Keys
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]cachedKey
}

type cachedKey struct {
	team    auth.Team
	expires time.Time
}

func newKeyCache(keys Keys, log *slog.Logger) *keyCache {
	return &keyCache{keys: keys, log: log, now: time.Now, entries: map[string]cachedKey{}}
}

// resolve returns the owner of apiKey, from the cache or the store.
func (c *keyCache) resolve(ctx context.Context, apiKey string) (auth.Team, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[apiKey]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.team, nil
	}
	k, team, admin, err := c.keys.ResolveAPIKey(ctx, apiKey)
	if errors.Is(err, errdefs.ErrNotFound) {
		c.forget(apiKey)
		return auth.Team{}, errdefs.Unauthenticated("invalid API key: it does not exist or was revoked; check E2B_API_KEY (`sbx env` prints the first team's key, `sbx key list` a team's keys)")
	}
	if err != nil {
		return auth.Team{}, err
	}
	t := auth.Team{ID: team.ID, Name: team.Name, KeyID: k.ID, Admin: admin}
	if now.Sub(k.LastUsed) > touchEvery {
		if err := c.keys.TouchAPIKey(context.WithoutCancel(ctx), k.ID, now.UTC()); err != nil {
			c.log.Debug("record API key use", "key.id", k.ID, "err", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCacheKeys {
		for key, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, key)
			}
		}
		if len(c.entries) >= maxCacheKeys {
			clear(c.entries)
		}
	}
	c.entries[apiKey] = cachedKey{team: t, expires: now.Add(keyTTL)}
	return t, nil
}

func (c *keyCache) forget(apiKey string) {
	c.mu.Lock()
	delete(c.entries, apiKey)
	c.mu.Unlock()
}

// KeysRevoked drops every cached key: another server sharing the database
// revoked keys (the app calls it on store.KeysChannel notifications).
func (s *Server) KeysRevoked() { s.keys.flush() }

// flush drops every cached key: after a revocation or a team's deletion,
// the next request of each key reads the store again.
func (c *keyCache) flush() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}
