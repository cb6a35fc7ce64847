package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Bad input is refused before any LLM or sandbox is contacted, with an
// error that says what to change.
func TestRefineCmdRejectsBadInput(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		errHas string
	}{
		{"bad pattern", []string{"x", "--expect", "("}, nil, "invalid expected-output pattern"},
		{"bad language", []string{"x", "-l", "cobol"}, nil, "unknown language"},
		{"too many attempts", []string{"x", "-n", "50"}, nil, "max attempts 50 out of range"},
		{"missing test file", []string{"x", "--test", "/nonexistent/test.py"}, nil, "--test"},
		{"no model", []string{"x"}, map[string]string{"SBX_LLM_MODEL": "", "SBX_LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "SBX_LLM_MODEL"},
		{"bad LLM URL", []string{"x", "--llm-base-url", "localhost:11434"}, map[string]string{"SBX_LLM_MODEL": "m"}, "invalid LLM base URL"},
		{"bad LLM timeout", []string{"x", "--llm-timeout", "soon"}, map[string]string{"SBX_LLM_MODEL": "m"}, "--llm-timeout"},
		{"no API key", []string{"x"}, map[string]string{"SBX_LLM_MODEL": "m", "SBX_LLM_BASE_URL": "http://127.0.0.1:1/v1", "E2B_API_KEY": ""}, "no API key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"SBX_LLM_MODEL", "SBX_LLM_BASE_URL", "SBX_LLM_API_KEY", "SBX_LLM_PROVIDER", "SBX_LLM_TIMEOUT"} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			exited := -1
			cmd := refineCmd(func(code int) { exited = code })
			cmd.SilenceUsage, cmd.SilenceErrors = true, true // as the root command sets them
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
			}
			if exited != -1 || out.Len() != 0 {
				t.Errorf("exit %d, stdout %q; want an error and nothing on stdout", exited, out.String())
			}
		})
	}
}
