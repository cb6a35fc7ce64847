package webhook

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

type vector struct {
	Name              string `json:"name"`
	Secret            string `json:"secret"`
	Body              string `json:"body"`
	MsgID             string `json:"msgId"`
	Timestamp         int64  `json:"timestamp"`
	E2BSignature      string `json:"e2bSignature"`
	StandardSignature string `json:"standardSignature"`
}

// loadVectors reads testdata/vectors.json, which testdata/verify.py
// generated (an independent implementation), so these tests are not
// checking our code against its own output.
func loadVectors(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func stdHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, sig)
	return h
}

func TestVectors(t *testing.T) {
	t.Parallel()
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			body := []byte(v.Body)
			if got := SignE2B(v.Secret, body); got != v.E2BSignature {
				t.Errorf("SignE2B = %s, want %s", got, v.E2BSignature)
			}
			got, err := SignStandard(v.Secret, v.MsgID, time.Unix(v.Timestamp, 0), body)
			if err != nil || got != v.StandardSignature {
				t.Errorf("SignStandard = %s, %v; want %s", got, err, v.StandardSignature)
			}
			if err := VerifyE2B(v.Secret, body, v.E2BSignature); err != nil {
				t.Errorf("VerifyE2B: %v", err)
			}
			now := time.Unix(v.Timestamp+30, 0)
			if err := VerifyStandardAt(v.Secret, stdHeaders(v.MsgID, v.Timestamp, v.StandardSignature), body, 0, now); err != nil {
				t.Errorf("VerifyStandardAt: %v", err)
			}
			tampered := append([]byte(v.Body), ' ')
			if err := VerifyE2B(v.Secret, tampered, v.E2BSignature); !errors.Is(err, ErrInvalidSignature) {
				t.Errorf("VerifyE2B(tampered) = %v, want ErrInvalidSignature", err)
			}
			if err := VerifyStandardAt(v.Secret, stdHeaders(v.MsgID, v.Timestamp, v.StandardSignature), tampered, 0, now); !errors.Is(err, ErrInvalidSignature) {
				t.Errorf("VerifyStandardAt(tampered) = %v, want ErrInvalidSignature", err)
			}
		})
	}
}

// TestPublishedStandardVector uses the example published with the Standard
// Webhooks reference libraries, an implementation we did not write.
func TestPublishedStandardVector(t *testing.T) {
	t.Parallel()
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = 1614265330
		want   = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	body := []byte(`{"test": 2432232314}`)
	got, err := SignStandard(secret, id, time.Unix(ts, 0), body)
	if err != nil || got != want {
		t.Fatalf("SignStandard = %s, %v; want %s", got, err, want)
	}
}

func TestVerifyStandardErrors(t *testing.T) {
	t.Parallel()
	body := []byte(`{"x":1}`)
	ts := time.Unix(1764115200, 0)
	sig, err := SignStandard("sek", "msg_1", ts, body)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		secret  string
		headers http.Header
		now     time.Time
		want    error
	}{
		{"ok", "sek", stdHeaders("msg_1", ts.Unix(), sig), ts, nil},
		{"rotation list", "sek", stdHeaders("msg_1", ts.Unix(), "v1,bm9wZQ== "+sig), ts, nil},
		{"wrong secret", "other", stdHeaders("msg_1", ts.Unix(), sig), ts, ErrInvalidSignature},
		{"wrong id", "sek", stdHeaders("msg_2", ts.Unix(), sig), ts, ErrInvalidSignature},
		{"timestamp changed", "sek", stdHeaders("msg_1", ts.Unix()+1, sig), ts, ErrInvalidSignature},
		{"too old", "sek", stdHeaders("msg_1", ts.Unix(), sig), ts.Add(6 * time.Minute), ErrTimestampTooOld},
		{"from the future", "sek", stdHeaders("msg_1", ts.Unix(), sig), ts.Add(-6 * time.Minute), ErrTimestampTooOld},
		{"missing id", "sek", stdHeaders("", ts.Unix(), sig), ts, ErrMissingHeader},
		{"missing signature", "sek", stdHeaders("msg_1", ts.Unix(), ""), ts, ErrMissingHeader},
		{"bad timestamp", "sek", func() http.Header { h := stdHeaders("msg_1", 0, sig); h.Set(HeaderTimestamp, "yesterday"); return h }(), ts, ErrInvalidHeaderData},
		{"empty secret", "", stdHeaders("msg_1", ts.Unix(), sig), ts, ErrInvalidSecret},
		{"bad whsec", "whsec_!!!", stdHeaders("msg_1", ts.Unix(), sig), ts, ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := VerifyStandardAt(tt.secret, tt.headers, body, 0, tt.now)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("VerifyStandardAt = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyE2BErrors(t *testing.T) {
	t.Parallel()
	body := []byte("{}")
	sig := SignE2B("s", body)
	if len(sig) != 43 {
		t.Fatalf("signature %q has %d chars, want 43 (base64url, no padding)", sig, len(sig))
	}
	for _, tt := range []struct {
		name, secret, sig string
		want              error
	}{
		{"ok", "s", sig, nil},
		{"missing", "s", "", ErrMissingHeader},
		{"empty secret", "", sig, ErrInvalidSecret},
		{"wrong", "t", sig, ErrInvalidSignature},
	} {
		err := VerifyE2B(tt.secret, body, tt.sig)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: VerifyE2B = %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestPythonVerifier has the independent Python implementation recompute
// every vector, so a wrong vectors.json cannot pass silently.
func TestPythonVerifier(t *testing.T) {
	t.Parallel()
	py := requirePython(t)
	out, err := exec.CommandContext(t.Context(), py, "testdata/verify.py", "vectors", "testdata/vectors.json").CombinedOutput()
	if err != nil {
		t.Fatalf("verify.py: %v\n%s", err, out)
	}
}

func requirePython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("python3 not found and SBX_REQUIRE_INTEGRATION=1")
		}
		t.Skip("python3 not found; install it to run the independent signature check")
	}
	return py
}
