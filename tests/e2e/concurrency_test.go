package e2e

import (
	"fmt"
	"sync"
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

// testConcurrent creates sandboxes at once and runs commands in parallel in
// them: every command must complete with its own output. (A stream cut
// under this load is how proxy/agent connection bugs show up.)
func testConcurrent(t *testing.T, c *sdk.Client) {
	const sandboxes, perSandbox = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, sandboxes*perSandbox+sandboxes)
	for i := range sandboxes {
		wg.Go(func() {
			s, err := c.Create(opCtx(t), sdk.CreateOptions{})
			if err != nil {
				errs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			t.Cleanup(func() { s.Kill(opCtx(t)) })
			var inner sync.WaitGroup
			for j := range perSandbox {
				inner.Go(func() {
					want := fmt.Sprintf("%d-%d", i, j)
					res, err := s.Commands.Run(opCtx(t), "echo "+want, sdk.RunOptions{})
					switch {
					case err != nil:
						errs <- fmt.Errorf("sandbox %s command %s: %w", s.ID, want, err)
					case res.Stdout != want+"\n":
						errs <- fmt.Errorf("sandbox %s command %s printed %q", s.ID, want, res.Stdout)
					}
				})
			}
			inner.Wait()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
