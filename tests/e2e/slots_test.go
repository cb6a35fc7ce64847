package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestLastSlotRacesAcrossServers: a team capped at one sandbox races for
// its only slot 100 times, with creates sent to both servers sharing one
// PostgreSQL at once: each time exactly one create wins and the others are
// refused with 429, so the team never holds two sandboxes.
func TestLastSlotRacesAcrossServers(t *testing.T) {
	a, b := startPair(t)
	resp := a.Raw(t, "POST", "/teams", `{"name":"racers","maxSandboxes":1}`, map[string]string{"X-API-Key": a.AdminKey(t)})
	if resp.Status != http.StatusCreated && resp.Status != http.StatusOK {
		t.Fatalf("POST /teams: %d %s", resp.Status, resp.Body)
	}
	var team struct {
		APIKey string `json:"apiKey"`
	}
	if err := json.Unmarshal([]byte(resp.Body), &team); err != nil || team.APIKey == "" {
		t.Fatalf("POST /teams answered %s (%v)", resp.Body, err)
	}
	clients := []*sdk.Client{a.ClientWithKey(t, team.APIKey), b.ClientWithKey(t, team.APIKey)}
	const rounds, racers = 100, 4
	start := time.Now()
	for round := range rounds {
		var mu sync.Mutex
		var won []*sdk.Sandbox
		var wg sync.WaitGroup
		for r := range racers {
			wg.Go(func() {
				s, err := clients[r%2].Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute})
				var apiErr *sdk.APIError
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, s)
					mu.Unlock()
				case errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests:
				default:
					t.Errorf("round %d: create: %v", round, err)
				}
			})
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("round %d: %d creates won the team's only slot, want exactly 1", round, len(won))
		}
		if err := won[0].Kill(opCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d races of %d creates (half through each server) for a one-sandbox cap: one winner each, %v per round",
		rounds, racers, time.Since(start)/rounds)
}
