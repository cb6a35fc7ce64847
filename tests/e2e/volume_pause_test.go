package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestVolumeSurvivesPauseWithoutMemory: a sandbox that mounts a volume,
// paused without its memory and resumed (booted again from its
// filesystem), still has the volume mounted. Before, the pause forgot
// the sandbox's mounts with its container and it came back without them.
func TestVolumeSurvivesPauseWithoutMemory(t *testing.T) {
	srv := StartServer(t)
	client := srv.Client(t)
	vol, err := client.CreateVolume(opCtx(t), "kept")
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.WriteFile(opCtx(t), "/hello.txt", []byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	s := create(t, client, sdk.CreateOptions{Timeout: 5 * time.Minute, VolumeMounts: map[string]string{"/mnt/data": "kept"}})
	if r := srv.Raw(t, http.MethodPost, "/sandboxes/"+s.ID+"/pause", `{"memory":false}`, map[string]string{"X-API-Key": srv.APIKey}); r.Status != http.StatusNoContent {
		t.Fatalf("pause without memory = %d %s", r.Status, r.Body)
	}
	back, err := client.Connect(opCtx(t), s.ID, sdk.ConnectOptions{})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	res, err := back.Commands.Run(opCtx(t), "cat /mnt/data/hello.txt && echo more >> /mnt/data/hello.txt", sdk.RunOptions{})
	if err != nil || res.Stdout != "still here\n" {
		t.Fatalf("the volume after a pause without memory and a resume: %+v, %v", res, err)
	}
	if got, err := vol.ReadFile(opCtx(t), "/hello.txt"); err != nil || string(got) != "still here\nmore\n" {
		t.Errorf("the resumed sandbox's write, read through the content API: %q, %v", got, err)
	}
}
