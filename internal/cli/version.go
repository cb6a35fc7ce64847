package cli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// versionInfo is what `sbx version --json` prints; the field names are a
// contract for scripts and the package tests.
type versionInfo struct {
	Version   string `json:"version"`   // semantic version, e.g. 0.17.0 or 0.17.0+git.1a2b3c4
	Commit    string `json:"commit"`    // VCS revision the binary was built from ("" when unknown)
	Modified  bool   `json:"modified"`  // built from a tree with uncommitted changes
	GoVersion string `json:"goVersion"` // toolchain that built it
	Platform  string `json:"platform"`  // GOOS/GOARCH
}

// Commit is the VCS revision, set at build time with -ldflags (the Makefile).
var Commit = ""

func currentVersion() versionInfo {
	v := versionInfo{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	v.Modified = strings.HasSuffix(Version, ".dirty") // the Makefile's mark
	// Without the ldflag, take what `go build` stamped (buildvcs), which
	// it does only when it runs git itself (not with -buildvcs=false).
	if bi, ok := debug.ReadBuildInfo(); ok && v.Commit == "" {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this sbx binary",
		Long: `Print the semantic version of this sbx binary, the commit it was built from and
the Go toolchain. Release builds carry the version in the VERSION file (0.17.0);
builds from a commit that is not the release tag add it as build metadata
(0.17.0+git.1a2b3c4, ".dirty" with uncommitted changes).`,
		Example: `  sbx version
  sbx version --json | jq -r .version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := currentVersion()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			commit := v.Commit
			if len(commit) > 12 {
				commit = commit[:12]
			}
			if commit == "" {
				commit = "unknown"
			}
			if v.Modified {
				commit += " (modified)"
			}
			_, err := fmt.Fprintf(out, "sbx %s\ncommit %s\n%s %s\n", v.Version, commit, v.GoVersion, v.Platform)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
