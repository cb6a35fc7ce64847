package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/sdk"
)

// accountOptions are the flags of the team and key commands. They talk to
// the server's REST API like every other command, with the caller's team
// key ($E2B_API_KEY, --api-key) or, for cluster-wide operations, the admin
// key: --admin-key, $SBX_ADMIN_KEY, or the data dir's admin-key file when
// the command runs as root on the server's host (where the data dir also
// tells the server's address).
type accountOptions struct {
	apiURL, apiKey, adminKey, dataDir string
	dataDirSet                        func() bool
}

func (o *accountOptions) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.apiURL, "api-url", "", "server URL (default $E2B_API_URL, or the address recorded in --data-dir, else "+sdk.DefaultURL+")")
	f.StringVar(&o.apiKey, "api-key", "", "a team's API key, for its own keys (default $E2B_API_KEY)")
	f.StringVar(&o.adminKey, "admin-key", "", "the admin key (default $SBX_ADMIN_KEY, else read from --data-dir: run as root on the server's host)")
	f.StringVar(&o.dataDir, "data-dir", app.DefaultDataDir, "the server's data dir, where the admin key and the server's address are found")
	o.dataDirSet = func() bool { return f.Changed("data-dir") }
}

// url resolves the server URL: the flag, then the data dir's record when
// --data-dir was given, then $E2B_API_URL, then the default data dir's
// record, then the default.
func (o *accountOptions) url() string {
	if o.apiURL != "" {
		return o.apiURL
	}
	recorded := func() string {
		u, err := app.ReadKeyFile(app.ServerURLFile(o.dataDir))
		if err != nil {
			return ""
		}
		return u
	}
	if o.dataDirSet() {
		if u := recorded(); u != "" {
			return u
		}
	}
	if u := os.Getenv("E2B_API_URL"); u != "" {
		return u
	}
	if u := recorded(); u != "" {
		return u
	}
	return sdk.DefaultURL
}

func (o *accountOptions) newClient(key, teamID string) (*sdk.Client, error) {
	u := o.url()
	return sdk.NewClient(sdk.Config{APIURL: u, SandboxURL: u, APIKey: key, TeamID: teamID,
		HTTPClient: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DialContext: dialWithHint}}})
}

// admin returns a client with the admin key, acting on teamID if set.
func (o *accountOptions) admin(teamID string) (*sdk.Client, error) {
	key, err := o.adminKeyValue()
	if err != nil {
		return nil, err
	}
	return o.newClient(key, teamID)
}

// rawAdmin is the JSON client of routes the SDK does not cover (budgets),
// with the admin key.
func (o *accountOptions) rawAdmin() (*apiClient, error) {
	key, err := o.adminKeyValue()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: strings.TrimRight(o.url(), "/"), key: key, http: &http.Client{}}, nil
}

// rawTeam is rawAdmin with a team's key.
func (o *accountOptions) rawTeam() (*apiClient, error) {
	c := clientOptions{apiURL: o.apiURL, apiKey: o.apiKey}
	return c.api()
}

func (o *accountOptions) adminKeyValue() (string, error) {
	key := o.adminKey
	if key == "" {
		key = os.Getenv("SBX_ADMIN_KEY")
	}
	if key == "" {
		var err error
		key, err = app.ReadKeyFile(app.AdminKeyFile(o.dataDir))
		switch {
		case errors.Is(err, fs.ErrPermission):
			return "", fmt.Errorf("this needs the admin key: run as root on the server's host (it is in %s), or pass --admin-key / set SBX_ADMIN_KEY (print it with `sudo sbx env --admin`)", app.AdminKeyFile(o.dataDir))
		case err != nil:
			return "", fmt.Errorf("this needs the admin key: pass --admin-key or set SBX_ADMIN_KEY (print it with `sudo sbx env --admin` on the server's host), or --data-dir of a server on this host: %w", err)
		}
	}
	return key, nil
}

// team returns a client with a team's own key.
func (o *accountOptions) team() (*sdk.Client, error) {
	key := o.apiKey
	if key == "" {
		key = os.Getenv("E2B_API_KEY")
	}
	if key == "" {
		return nil, errors.New(`no API key: run 'eval "$(sbx env)"' to use the local server's key, pass --api-key, or --team with the admin key`)
	}
	return o.newClient(key, "")
}

// findTeam resolves a team by ID or name with the admin key.
func findTeam(ctx context.Context, c *sdk.Client, ref string) (sdk.Team, error) {
	teams, err := c.ListTeams(ctx)
	if err != nil {
		return sdk.Team{}, err
	}
	for _, t := range teams {
		if t.TeamID == ref || t.Name == ref {
			return t, nil
		}
	}
	names := make([]string, 0, len(teams))
	for _, t := range teams {
		names = append(names, t.Name)
	}
	return sdk.Team{}, fmt.Errorf("no team %q (teams: %s)", ref, strings.Join(names, ", "))
}

func maxText(n *int) string {
	switch {
	case n == nil:
		return "server default"
	case *n == 0:
		return "no cap"
	}
	return fmt.Sprint(*n)
}
