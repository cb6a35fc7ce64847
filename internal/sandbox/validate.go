package sandbox

import (
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/template"
)

// Bounds on what a create request may carry. Env vars end up in every
// process the sandbox starts: a NUL cannot be passed to execve at all, and
// Linux refuses an exec whose single env string is over 128 KiB
// (MAX_ARG_STRLEN) or whose env and arguments together pass a quarter of
// the stack limit, so a bad env var would break every command in the
// sandbox; these bounds keep well inside. Metadata is stored, listed,
// filtered on and sent in every lifecycle event and webhook.
const (
	MaxEnvVars          = 512
	MaxEnvNameLen       = 256
	MaxEnvValueLen      = 32 << 10
	MaxEnvTotal         = 256 << 10
	MaxMetadata         = 100
	MaxMetadataKeyLen   = 256
	MaxMetadataValueLen = 8 << 10
)

// validateInputs checks the template reference, env vars and metadata of
// a create request; messages name the fields as the E2B API does.
func (r *CreateRequest) validateInputs() error {
	if err := template.CheckRef("templateID", r.Template); err != nil {
		return err
	}
	if err := CheckEnv("envVars", r.EnvVars); err != nil {
		return err
	}
	return CheckMetadata("metadata", r.Metadata)
}

// CheckEnv checks env vars against the bounds above.
func CheckEnv(field string, env map[string]string) error {
	if len(env) > MaxEnvVars {
		return errdefs.Invalid("%s has %d variables, more than the limit of %d", field, len(env), MaxEnvVars)
	}
	total := 0
	for k, v := range env {
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			return errdefs.Invalid("%s: invalid variable name %q: it must be non-empty and contain no '=' or NUL", field, truncate(k, 64))
		case len(k) > MaxEnvNameLen:
			return errdefs.Invalid("%s: variable name %q… is %d bytes, more than the limit of %d", field, k[:32], len(k), MaxEnvNameLen)
		case strings.IndexByte(v, 0) >= 0:
			return errdefs.Invalid("%s: the value of %s contains a NUL byte, which no process can receive in its environment", field, k)
		case len(v) > MaxEnvValueLen:
			return errdefs.Invalid("%s: the value of %s is %d bytes, more than the limit of %d (pass large data as a file)", field, k, len(v), MaxEnvValueLen)
		}
		total += len(k) + len(v) + 2
	}
	if total > MaxEnvTotal {
		return errdefs.Invalid("%s total %d bytes, more than the limit of %d (pass large data as a file)", field, total, MaxEnvTotal)
	}
	return nil
}

// CheckMetadata checks metadata against the bounds above.
func CheckMetadata(field string, md map[string]string) error {
	if len(md) > MaxMetadata {
		return errdefs.Invalid("%s has %d entries, more than the limit of %d", field, len(md), MaxMetadata)
	}
	for k, v := range md {
		switch {
		case k == "" || strings.IndexByte(k, 0) >= 0:
			return errdefs.Invalid("%s: invalid key %q: it must be non-empty and contain no NUL", field, truncate(k, 64))
		case len(k) > MaxMetadataKeyLen:
			return errdefs.Invalid("%s: key %q… is %d bytes, more than the limit of %d", field, k[:32], len(k), MaxMetadataKeyLen)
		case strings.IndexByte(v, 0) >= 0:
			return errdefs.Invalid("%s: the value of %q contains a NUL byte", field, k)
		case len(v) > MaxMetadataValueLen:
			return errdefs.Invalid("%s: the value of %q is %d bytes, more than the limit of %d", field, k, len(v), MaxMetadataValueLen)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
