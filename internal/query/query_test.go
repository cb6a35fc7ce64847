package query

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		want    int
		wantErr string
	}{
		{raw: "", want: 25},
		{raw: "limit=1", want: 1},
		{raw: "limit=100", want: 100},
		{raw: "limit=0", wantErr: `limit must be an integer from 1 to 100, got "0"`},
		{raw: "limit=101", wantErr: `limit must be an integer from 1 to 100, got "101"`},
		{raw: "limit=ten", wantErr: `limit must be an integer from 1 to 100, got "ten"`},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.raw)
		got, err := Limit(q, 25, 100)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Limit(%q) error = %v, want invalid argument %q", tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Limit(%q) = %d, %v; want %d", tt.raw, got, err, tt.want)
		}
	}
}

func TestBool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		want    bool
		wantErr bool
	}{
		{raw: "", want: false},
		{raw: "orderAsc=true", want: true},
		{raw: "orderAsc=1", want: true},
		{raw: "orderAsc=false", want: false},
		{raw: "orderAsc=yes", wantErr: true},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.raw)
		got, err := Bool(q, "orderAsc")
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), "orderAsc must be true or false") {
				t.Errorf("Bool(%q) error = %v, want one naming orderAsc", tt.raw, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Bool(%q) = %v, %v; want %v", tt.raw, got, err, tt.want)
		}
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want []string
	}{
		{in: nil, want: nil},
		{in: []string{"a"}, want: []string{"a"}},
		{in: []string{"a,b", "c"}, want: []string{"a", "b", "c"}},
		{in: []string{" a , ,b ", ""}, want: []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := List(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
