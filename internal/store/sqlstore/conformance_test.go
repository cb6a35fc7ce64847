package sqlstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/secret"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/store/storetest"
	"github.com/sbxdev/sbx/internal/volume"
)

// TestEventsConformance runs the event log's suite on SQLite and PostgreSQL.
func TestEventsConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunEvents(t, func(t *testing.T) (store.Events, *sqldb.DB) {
			db := sqldbtest.Open(t, dialect)
			return sqlstore.New(db, nil), db
		})
	})
}

// TestTemplatesConformance runs the templates suite on SQLite and PostgreSQL.
func TestTemplatesConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunTemplates(t, func(t *testing.T) store.Templates {
			return sqlstore.New(sqldbtest.Open(t, dialect), nil)
		})
	})
}

// TestNodesConformance runs the node registry's suite on SQLite and PostgreSQL.
func TestNodesConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunNodes(t, func(t *testing.T) storetest.NodesStore {
			return sqlstore.New(sqldbtest.Open(t, dialect), nil)
		})
	})
}

// TestLayersConformance runs the published layers' suite on SQLite and PostgreSQL.
func TestLayersConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunLayers(t, func(t *testing.T) storetest.LayersStore {
			return sqlstore.New(sqldbtest.Open(t, dialect), nil)
		})
	})
}

// TestBuildJobsConformance runs the build queue's suite on SQLite and PostgreSQL.
func TestBuildJobsConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunBuildJobs(t, func(t *testing.T) storetest.BuildJobsStore {
			return sqlstore.New(sqldbtest.Open(t, dialect), nil)
		})
	})
}

// TestSnapshotsConformance runs the sandbox snapshots' suite on SQLite and PostgreSQL.
func TestSnapshotsConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunSnapshots(t, func(t *testing.T) storetest.SnapshotsStore {
			return sqlstore.New(sqldbtest.Open(t, dialect), nil)
		})
	})
}

// TestVolumesConformance runs the team volumes' suite on SQLite and PostgreSQL.
func TestVolumesConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunVolumes(t, func(t *testing.T) volume.Repository {
			return sqlstore.NewVolumes(sqldbtest.Open(t, dialect))
		})
	})
}

// TestSecretsNewest: the secret written last, of any team, on SQLite and
// PostgreSQL (secret.Service.CheckKey reads it at start).
func TestSecretsNewest(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		repo := sqlstore.NewSecrets(sqldbtest.Open(t, dialect))
		if _, err := repo.Newest(t.Context()); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Newest of none = %v; want not found", err)
		}
		at := time.Unix(1_700_000_000, 0).UTC()
		for i, team := range []string{"t1", "t2"} {
			x := secret.Sealed{Secret: secret.Secret{ID: "sec_" + team, TeamID: team, Name: "n", Version: 1,
				CreatedAt: at, UpdatedAt: at.Add(time.Duration(i) * time.Second)}, Ciphertext: "c-" + team}
			if err := repo.Insert(t.Context(), x); err != nil {
				t.Fatal(err)
			}
		}
		if x, err := repo.Newest(t.Context()); err != nil || x.ID != "sec_t2" || x.Ciphertext != "c-t2" {
			t.Errorf("Newest = %+v, %v; want sec_t2", x, err)
		}
	})
}
