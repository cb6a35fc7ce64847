package store

import "time"

// TemplateSpawns is how often a template was used to create a sandbox and
// when it was last (E2B's spawnCount, lastSpawnedAt).
type TemplateSpawns struct {
	Count int64
	Last  time.Time
}
