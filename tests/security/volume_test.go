package security

import (
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// Code in a sandbox writes a volume the host then serves through the
// content API: links planted there (to /etc, /etc/shadow, /, a FIFO) must
// never make the host read, write, list or delete anything outside the
// volume, nor hang it.
func TestVolumePlantedLinksStayInTheVolume(t *testing.T) {
	srv := startServer(t)
	c := srv.Client(t)
	v, err := c.CreateVolume(opCtx(t), "planted")
	if err != nil {
		t.Fatal(err)
	}
	s := create(t, c, sdk.CreateOptions{VolumeMounts: map[string]string{"/mnt/v": v.Name}})
	mustSh(t, s, "root", `cd /mnt/v && ln -s /etc etc && ln -s /etc/shadow shadow && ln -s / root && ln -s ../../../../etc up &&
		mkfifo fifo && mkdir real && echo inside > real/file && ln -s real/file rel`)
	hostShadow, _ := os.ReadFile("/etc/shadow")
	content := func(method, what, path, body string) (int, string) {
		t.Helper()
		r := srv.Raw(t, method, "/volumecontent/"+v.ID+"/"+what+"?path="+url.QueryEscape(path), body,
			map[string]string{"Authorization": "Bearer " + v.Token, "Content-Type": "application/octet-stream"})
		return r.Status, r.Body
	}
	for _, p := range []string{"etc/passwd", "shadow", "root/etc/hostname", "up/passwd", "rel", "fifo", "../../etc/passwd"} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			st, body := content("GET", "file", p, "")
			if st == 200 || strings.Contains(body, "root:") {
				t.Errorf("GET file %s through a planted link: %d %.80q", p, st, body)
			}
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("GET file %s hung", p)
		}
	}
	for _, p := range []string{"etc/sbx-volume-test", "shadow", "root/tmp/sbx-volume-test", "up/sbx-volume-test"} {
		if st, _ := content("PUT", "file", p, "pwned"); st < 400 {
			t.Errorf("PUT file %s through a planted link answered %d", p, st)
		}
	}
	for _, f := range []string{"/etc/sbx-volume-test", "/tmp/sbx-volume-test"} {
		if _, err := os.Stat(f); err == nil {
			os.Remove(f)
			t.Errorf("a write through a planted link created %s on the host", f)
		}
	}
	if now, _ := os.ReadFile("/etc/shadow"); string(now) != string(hostShadow) {
		t.Fatal("/etc/shadow changed")
	}
	if st, body := content("GET", "dir", "etc", ""); st == 200 {
		t.Errorf("listing through a link to /etc answered 200: %.200s", body)
	}
	if st, body := content("GET", "dir", "", ""); st != 200 || !strings.Contains(body, `"type":"symlink"`) || strings.Contains(body, "passwd") {
		t.Errorf("listing the volume root: %d %.300s", st, body)
	}
	// Deleting a link removes the link, not what it points to.
	if st, body := content("DELETE", "path", "etc", ""); st != 204 {
		t.Errorf("DELETE the planted link: %d %s", st, body)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("/etc/passwd is gone: %v", err)
	}
	if st, body := content("DELETE", "path", "root/tmp", ""); st == 204 {
		t.Errorf("DELETE through a link to /: %d %s", st, body)
	}
	if st, body := content("GET", "file", "real/file", ""); st != 200 || body != "inside\n" {
		t.Errorf("a real file in the volume: %d %q", st, body)
	}
}

// Volumes are their team's: another team's key sees, mounts and deletes
// none of them, and a volume's token opens that volume only.
func TestVolumesArePerTeam(t *testing.T) {
	srv := startServer(t)
	a := srv.Client(t)
	b := srv.ClientWithKey(t, srv.CreateTeam(t, "vol-other"))
	va, err := a.CreateVolume(opCtx(t), "shared-name")
	if err != nil {
		t.Fatal(err)
	}
	if err := va.WriteFile(opCtx(t), "/a.txt", []byte("team a")); err != nil {
		t.Fatal(err)
	}
	vb, err := b.CreateVolume(opCtx(t), "shared-name") // same name, other team: fine
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetVolume(opCtx(t), va.ID); err == nil {
		t.Error("team b read team a's volume (and its token)")
	}
	if err := b.DeleteVolume(opCtx(t), va.ID); err == nil {
		t.Error("team b deleted team a's volume")
	}
	if list, _ := b.ListVolumes(opCtx(t)); len(list) != 1 || list[0].ID != vb.ID {
		t.Errorf("team b lists %+v", list)
	}
	// b's token on a's volume.
	forged := *va
	forged.Token = vb.Token
	if got, err := forgedRead(t, &forged); err == nil {
		t.Errorf("team b's volume token read team a's volume: %q", got)
	}
	// Mounting by name gives b its own volume, by a's ID nothing.
	sb := create(t, b, sdk.CreateOptions{VolumeMounts: map[string]string{"/mnt/v": "shared-name"}})
	if out := sh(t, sb, "", "cat /mnt/v/a.txt 2>&1"); strings.Contains(out.Stdout, "team a") {
		t.Error("team b's sandbox mounted team a's volume by name")
	}
	if s, err := b.Create(opCtx(t), sdk.CreateOptions{VolumeMounts: map[string]string{"/mnt/v": va.ID}}); err == nil {
		_ = s.Kill(opCtx(t))
		t.Error("team b's sandbox mounted team a's volume by ID")
	}
	if got, err := va.ReadFile(opCtx(t), "/a.txt"); err != nil || string(got) != "team a" {
		t.Errorf("team a's file: %q, %v", got, err)
	}
}

func forgedRead(t *testing.T, v *sdk.Volume) (string, error) {
	t.Helper()
	b, err := v.ReadFile(opCtx(t), "/a.txt")
	return string(b), err
}
