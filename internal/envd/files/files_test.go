package files

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"
)

// testdata/signatures.json was computed with Python's hashlib, independently
// of this package.
func TestSignVectors(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/signatures.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Path, Operation, User, Token, Signature string
		Expiration                              int64
	}
	if err := json.Unmarshal(b, &vectors); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		if got := Sign(v.Path, v.Operation, v.User, v.Token, v.Expiration); got != v.Signature {
			t.Errorf("Sign(%+v) = %s", v, got)
		}
	}
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	good := Sign("/f", OpRead, "", "tok", 0)
	tests := []struct {
		name, token, query, header string
		status                     int // 0 = allowed
	}{
		{"open sandbox", "", "path=/f", "", 0},
		{"header", "tok", "path=/f", "tok", 0},
		{"wrong header wins over good signature", "tok", "path=/f&signature=" + url.QueryEscape(good), "bad", 401},
		{"signature", "tok", "path=/f&signature=" + url.QueryEscape(good), "", 0},
		{"nothing", "tok", "path=/f", "", 401},
		{"bad expiration", "tok", "path=/f&signature=x&signature_expiration=soon", "", 400},
		{"expired", "tok", "path=/f&signature=x&signature_expiration=1799999999", "", 401},
		{"not yet expired", "tok", "path=/f&signature=" + url.QueryEscape(Sign("/f", OpRead, "", "tok", 1800000001)) + "&signature_expiration=1800000001", "", 0},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/files?"+tt.query, nil)
		if tt.header != "" {
			r.Header.Set("X-Access-Token", tt.header)
		}
		e := authorize(r, tt.token, OpRead, now)
		switch {
		case tt.status == 0 && e != nil:
			t.Errorf("%s: refused %v", tt.name, e)
		case tt.status != 0 && (e == nil || e.status != tt.status):
			t.Errorf("%s: %v, want %d", tt.name, e, tt.status)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"": false, "gzip": true, "br, gzip;q=0.5": true, "gzip;q=0": false, "identity": false, "GZIP": true} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Encoding", v)
		if got := acceptsGzip(r); got != want {
			t.Errorf("acceptsGzip(%q) = %v", v, got)
		}
	}
}

func TestRefusesIdentity(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"": false, "gzip": false, "identity;q=0": true, "*;q=0": true, "*;q=0, identity": false, "br": false} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Encoding", v)
		if got := refusesIdentity(r); got != want {
			t.Errorf("refusesIdentity(%q) = %v", v, got)
		}
	}
}

func TestMetadataHeaders(t *testing.T) {
	t.Parallel()
	big := make([]byte, 4100)
	for i := range big {
		big[i] = 'a'
	}
	tests := []struct {
		name string
		h    http.Header
		want map[string]string
		err  bool
	}{
		{"none", http.Header{"Content-Type": {"x"}}, nil, false},
		{"lower-cased key", http.Header{"X-Metadata-Owner": {"Me"}}, map[string]string{"owner": "Me"}, false},
		{"non-printable", http.Header{"X-Metadata-K": {"a\x01"}}, nil, true},
		{"too big", http.Header{"X-Metadata-K": {string(big)}}, nil, true},
	}
	for _, tt := range tests {
		got, e := metadataHeaders(tt.h)
		if (e != nil) != tt.err || len(got) != len(tt.want) {
			t.Errorf("%s: %v %v", tt.name, got, e)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s = %q", tt.name, k, got[k])
			}
		}
	}
}
