package request

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

type body struct {
	Name    string            `json:"name"`
	Timeout *int64            `json:"timeout"`
	Tags    map[string]string `json:"tags"`
	Small   int8              `json:"small"`
	Inner
}

type Inner struct {
	Flag bool `json:"flag"`
}

type checked struct {
	N int `json:"n"`
}

func (c checked) Validate() error {
	if c.N > 3 {
		return errdefs.Invalid("n must be at most 3, got %d", c.N)
	}
	return nil
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		limit      int64
		into       any
		mention    string // "" = must succeed
	}{
		{"ok", `{"name": "a", "timeout": 5, "flag": true}`, SmallBody, &body{}, ""},
		{"empty body", ``, SmallBody, &body{}, ""},
		{"unknown field named, known ones listed", `{"nmae": "a"}`, SmallBody, &body{}, `"nmae"`},
		{"known fields listed", `{"nmae": "a"}`, SmallBody, &body{}, "flag, name, small, tags, timeout"},
		{"wrong type names the field", `{"timeout": "soon"}`, SmallBody, &body{}, `"timeout" must be an integer`},
		{"overflowing integer names the bound", `{"small": 300}`, SmallBody, &body{}, "between -128 and 127"},
		{"float into an integer", `{"timeout": 1e30}`, SmallBody, &body{}, `"timeout"`},
		{"syntax error", `{"name": `, SmallBody, &body{}, "not valid JSON"},
		{"two values", `{} {}`, SmallBody, &body{}, "more than one JSON value"},
		{"too large names the limit", `{"name": "` + strings.Repeat("x", 100) + `"}`, 64, &body{}, "larger than 64 bytes"},
		{"not an object", `[1]`, SmallBody, &body{}, "must be an object, got array"},
		{"validate runs", `{"n": 4}`, SmallBody, &checked{}, "n must be at most 3"},
		{"validate runs on an empty body", ``, SmallBody, &checked{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("POST", "/x", strings.NewReader(tt.body))
			err := Decode(r, tt.into, tt.limit)
			if tt.mention == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Decode = %v, want an invalid-argument error", err)
			}
			if !strings.Contains(errdefs.Message(err), tt.mention) {
				t.Errorf("message %q does not mention %q", errdefs.Message(err), tt.mention)
			}
		})
	}
}

func TestSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v    int64
		want time.Duration
		ok   bool
	}{
		{0, 0, true},
		{300, 300 * time.Second, true},
		{86400, 24 * time.Hour, true},
		{86401, 0, false},
		{-1, 0, false},
		{18446744074, 0, false}, // wraps int64 nanoseconds into a tiny duration
		{9223372037, 0, false},
	}
	for _, tt := range tests {
		got, err := Seconds("timeout", tt.v, 24*time.Hour)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Seconds(%d) = %v, %v; want %v, ok %v", tt.v, got, err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "timeout must be between 0 and 86400 seconds") {
			t.Errorf("Seconds(%d) error %q does not name the field and bound", tt.v, err)
		}
	}
}
