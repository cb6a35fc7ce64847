package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

func TestExitCode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), ExitFailure},
		{&sdk.APIError{Status: 404, Code: 404}, ExitFailure},
		{usageErrorf("bad flag"), ExitUsage},
		{fmt.Errorf("wrapped: %w", usageErrorf("bad flag")), ExitUsage},
		{&sdk.RPCError{Code: "deadline_exceeded"}, ExitTimeout},
		{&sdk.APIError{Status: 504, Code: 504}, ExitTimeout},
		{fmt.Errorf("run: %w", context.DeadlineExceeded), ExitTimeout},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestExecuteUsage runs command lines that are wrong before any server is
// involved: each exits 2 and says where the usage is.
func TestExecuteUsage(t *testing.T) {
	t.Setenv("E2B_API_KEY", "e2b_0000000000000000000000000000000000000000")
	t.Setenv("E2B_API_URL", "http://127.0.0.1:1")
	for _, args := range [][]string{
		{"nosuch"}, {"sandbox", "nosuch"}, {"webhook", "nosuch"}, {"sandbox", "kill"},
		{"sandbox", "list", "--bogus"}, {"sandbox", "create", "--timeout", "soon"},
		{"team", "delete", "research"}, {"team", "update", "research"},
	} {
		var out, errOut bytes.Buffer
		if code := Execute(t.Context(), args, &out, &errOut); code != ExitUsage || !bytes.Contains(errOut.Bytes(), []byte("--help' for usage")) {
			t.Errorf("sbx %v = exit %d, stderr %q; want %d and a pointer to --help", args, code, errOut.String(), ExitUsage)
		}
	}
	// A group without a subcommand prints its help and succeeds.
	var out bytes.Buffer
	if code := Execute(t.Context(), []string{"sandbox"}, &out, &out); code != 0 || !bytes.Contains(out.Bytes(), []byte("Available Commands")) {
		t.Errorf("sbx sandbox = exit %d %q; want its help", code, out.String())
	}
}
