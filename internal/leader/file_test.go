package leader_test

import (
	"testing"

	"github.com/sbxdev/sbx/internal/leader"
	"github.com/sbxdev/sbx/internal/leader/leadertest"
)

func TestFileElector(t *testing.T) {
	dir := t.TempDir()
	leadertest.Run(t, func(t *testing.T, id string) leadertest.Campaigner {
		return &leader.File{Dir: dir}
	})
}
