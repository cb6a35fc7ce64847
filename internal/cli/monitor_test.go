package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	whsig "github.com/sbxdev/sbx/sdk/webhook"
)

// TestMonitorCommand runs the real `sbx monitor` command and feeds it
// E2B-signed deliveries, good and forged.
func TestMonitorCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	root := NewRoot()
	var out syncBuf
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"monitor", "--listen", addr, "--secret", "s3cret", "--db", filepath.Join(t.TempDir(), "m.db"),
		"--dashboard-key", "dash", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sbx monitor: %v", err)
		}
	}()
	waitOutput(t, &out, "dashboard key: dash")

	url := "http://" + addr
	deliver := func(body []byte, sig string) int {
		req, _ := http.NewRequest("POST", url+"/webhook", bytes.NewReader(body))
		req.Header.Set(whsig.HeaderE2BSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ts := time.Now().UTC().Format(time.RFC3339)
	good := []byte(`{"id":"e1","type":"sandbox.lifecycle.created","sandboxId":"sb1","sandboxTeamId":"t","sandboxTemplateId":"base","eventData":{},"timestamp":"` + ts + `"}`)
	forged := []byte(`{"id":"e2","type":"sandbox.lifecycle.killed","sandboxId":"sb1","sandboxTeamId":"t","eventData":{"kill_reason":"request"},"timestamp":"` + ts + `"}`)
	if st := deliver(good, whsig.SignE2B("s3cret", good)); st != http.StatusNoContent {
		t.Fatalf("good delivery: %d", st)
	}
	if st := deliver(forged, whsig.SignE2B("not-the-secret", forged)); st != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %d, want 401", st)
	}
	req, _ := http.NewRequest("GET", url+"/events/sandboxes?limit=100", nil)
	req.Header.Set("X-API-Key", "dash")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].ID != "e1" {
		t.Fatalf("stored events = %+v, want only e1 (the forged kill must not be stored)", evs)
	}
}
