// Package request is the control plane's one way to read a request body:
// JSON decoded once, strictly (no unknown fields, no trailing data, no
// field of the wrong type), under a per-route size limit, then checked by
// the body's own Validate method. Every failure is an errdefs.Invalid that
// names the field and the bound, so clients get a 400 that says what to fix
// (written by errdefs.WriteHTTP like every other error).
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Body size limits, per kind of route.
const (
	SmallBody = 16 << 10 // a few scalar fields: timeouts, names, budgets
	MaxBody   = 1 << 20  // a sandbox create: env vars and metadata
)

// Validator is implemented by bodies that check their own fields; Decode
// calls it after decoding.
type Validator interface {
	Validate() error
}

// Decode reads r's JSON body into v. The body must be at most limit bytes
// and hold one JSON value whose fields v knows. An empty body leaves v as
// it is (every field optional), unless v's Validate says otherwise.
func Decode(r *http.Request, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return readError(err)
	}
	if int64(len(body)) > limit {
		return errdefs.Invalid("request body is larger than %s, the limit of %s %s", size(limit), r.Method, r.URL.Path)
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := Unmarshal(body, v); err != nil {
			return err
		}
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			if errdefs.HTTPStatus(err) == http.StatusInternalServerError { // an uncategorised message
				return errdefs.Invalid("%v", err)
			}
			return err
		}
	}
	return nil
}

// Unmarshal decodes data strictly into v, with Decode's error messages.
func Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, v)
	}
	if dec.More() {
		return errdefs.Invalid("request body holds more than one JSON value; send one object")
	}
	return nil
}

// readError explains a body that could not be read: most often a client
// too slow for the server's body deadlines (see BodyDeadline).
func readError(err error) error {
	var slow *tooSlowError
	switch {
	case errors.As(err, &slow):
		return errdefs.Invalid("%v", slow)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errdefs.Invalid("request body arrived too slowly: %v", err)
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return errdefs.Invalid("request body is larger than %s", size(mb.Limit))
	}
	return errdefs.Invalid("read request body: %v", err)
}

func jsonError(err error, v any) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return errdefs.Invalid("request body is not valid JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return errdefs.Invalid("request body must be %s, got %s", jsonType(te.Type), te.Value)
		}
		return errdefs.Invalid("field %q must be %s, got %s", field, jsonType(te.Type), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if known := fieldNames(v); len(known) > 0 {
			return errdefs.Invalid("unknown field %s in the request body; the fields are %s", name, strings.Join(known, ", "))
		}
		return errdefs.Invalid("unknown field %s in the request body", name)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.Invalid("request body is not valid JSON: it ends too early")
	}
	return errdefs.Invalid("request body is not valid JSON: %v", err)
}

// jsonType names a Go type as a client sees it in JSON.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("an integer between %d and %d", minInt(t), maxInt(t))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return t.String()
}

func minInt(t reflect.Type) int64 { return -1 << (t.Bits() - 1) }
func maxInt(t reflect.Type) int64 { return 1<<(t.Bits()-1) - 1 }

// fieldNames lists the JSON fields of v's struct type, for error messages.
func fieldNames(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case name == "-":
			case f.Anonymous && name == "":
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
				}
			case f.IsExported():
				if name == "" {
					name = f.Name
				}
				out = append(out, name)
			}
		}
	}
	walk(t)
	slices.Sort(out)
	return out
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Seconds converts a field given in whole seconds to a duration, checking
// 0 ≤ v ≤ max before multiplying so that no value can overflow into a
// negative or tiny duration (18446744074 s × 10⁹ wraps int64).
func Seconds(field string, v int64, max time.Duration) (time.Duration, error) {
	limit := int64(max / time.Second)
	if v < 0 || v > limit {
		return 0, errdefs.Invalid("%s must be between 0 and %d seconds (%v), got %d", field, limit, max, v)
	}
	return time.Duration(v) * time.Second, nil
}
