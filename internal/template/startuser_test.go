package template

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/builder"
)

// The code interpreter's server runs as root (its kernels do, as in E2B);
// a template built on it inherits that with the start command, while its
// commands keep running as its own user.
func TestStartUserInheritedWithStartCommand(t *testing.T) {
	t.Parallel()
	var ci Template
	for _, b := range Builtins() {
		if b.ID == "code-interpreter" {
			ci = b.Template
		}
	}
	if ci.StartUser != "root" || ci.StartAs() != "root" || ci.User != "user" {
		t.Fatalf("built-in code-interpreter: StartUser %q, StartAs %q, User %q", ci.StartUser, ci.StartAs(), ci.User)
	}
	if base := (Template{User: "user"}); base.StartAs() != "user" {
		t.Fatalf("without StartUser the start command runs as %q, want the template's user", base.StartAs())
	}

	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0)
	ci.Rootfs = e.data
	e.reg.Put(ci)
	var r registered
	if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "my-ci"}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	steps := []builder.Step{{Type: "RUN", Args: []string{"echo hi"}}}
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "code-interpreter", "steps": steps}, nil); code != http.StatusAccepted {
		t.Fatalf("start build: HTTP %d", code)
	}
	if st, logs := e.waitBuild(t, "team1", r); st.Status != StatusReady {
		t.Fatalf("build %+v %q", st, logs)
	}
	tpl, ok := e.reg.Get("my-ci")
	if !ok || tpl.StartCmd != ci.StartCmd || tpl.StartAs() != "root" {
		t.Fatalf("derived template: StartCmd %q StartAs %q (found %v), want %q as root", tpl.StartCmd, tpl.StartAs(), ok, ci.StartCmd)
	}
}
