package e2e

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestGoSDK drives the Go SDK's parts beyond commands and files against a
// real server: sentinel errors, terminals, directory watches, host and
// signed-URL helpers, events, webhooks and template builds.
func TestGoSDK(t *testing.T) {
	srv := StartServer(t)
	c := srv.Client(t)
	sb := create(t, c, sdk.CreateOptions{})

	t.Run("SentinelErrors", func(t *testing.T) {
		if _, err := c.Get(opCtx(t), "nosuchsandbox0000000"); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Get of a missing sandbox = %v; want ErrNotFound", err)
		}
		bad, err := sdk.NewClient(sdk.Config{APIURL: srv.URL, APIKey: "e2b_" + strings.Repeat("0", 40)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.List(opCtx(t), sdk.ListOptions{}); !errors.Is(err, sdk.ErrUnauthorized) {
			t.Errorf("List with a wrong key = %v; want ErrUnauthorized", err)
		}
		if _, err := sb.Files.Read(opCtx(t), "/no/such/file"); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Read of a missing file = %v; want ErrNotFound", err)
		}
		if _, err := sb.Commands.Run(opCtx(t), "sleep 30", sdk.RunOptions{Timeout: time.Second}); !errors.Is(err, sdk.ErrTimeout) {
			t.Errorf("Run past its Timeout = %v; want ErrTimeout", err)
		}
	})

	t.Run("Pty", func(t *testing.T) {
		var mu sync.Mutex
		var out bytes.Buffer
		h, err := sb.Pty.Create(opCtx(t), sdk.PtyOptions{Cols: 80, Rows: 24, OnData: func(b []byte) {
			mu.Lock()
			out.Write(b)
			mu.Unlock()
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Pty.Resize(opCtx(t), h.PID, 123, 45); err != nil {
			t.Fatal(err)
		}
		// A second client attaches to the same terminal and sees its output.
		var mu2 sync.Mutex
		var out2 bytes.Buffer
		h2, err := sb.Pty.Connect(opCtx(t), h.PID, func(b []byte) {
			mu2.Lock()
			out2.Write(b)
			mu2.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Pty.SendInput(opCtx(t), h.PID, []byte("echo sum=$((6*7)); stty size; tty; exit 3\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := h2.Wait(opCtx(t)); err == nil {
			t.Error("the attached handle saw exit 0, want 3")
		}
		mu2.Lock()
		if !strings.Contains(out2.String(), "sum=42") {
			t.Errorf("attached client's output lacks sum=42: %q", out2.String())
		}
		mu2.Unlock()
		res, err := h.Wait(opCtx(t))
		var exit *sdk.CommandExitError
		if !errors.As(err, &exit) || res.ExitCode != 3 {
			t.Errorf("terminal ended with %v; want exit code 3", err)
		}
		mu.Lock()
		got := out.String()
		mu.Unlock()
		for _, want := range []string{"sum=42", "45 123", "/dev/pts/"} {
			if !strings.Contains(got, want) {
				t.Errorf("terminal output lacks %q:\n%q", want, got)
			}
		}
	})

	t.Run("Watch", func(t *testing.T) {
		if _, err := sb.Files.MakeDir(opCtx(t), "/tmp/watched"); err != nil {
			t.Fatal(err)
		}
		events := make(chan sdk.FilesystemEvent, 16)
		w, err := sb.Files.Watch(opCtx(t), "/tmp/watched", func(e sdk.FilesystemEvent) { events <- e }, sdk.WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sb.Files.Write(opCtx(t), "/tmp/watched/a.txt", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			if e.Name != "a.txt" || (e.Type != "create" && e.Type != "write") {
				t.Errorf("first event %+v; want a create or write of a.txt", e)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no event for a file written in the watched directory")
		}
		w.Stop()
		if err := w.Wait(); err != nil {
			t.Errorf("Wait after Stop = %v, want nil", err)
		}
	})

	t.Run("HostAndPortRequests", func(t *testing.T) {
		// A server on loopback answers the domain localhost:<port>, which
		// wins over the client's own (as in E2B's SDKs).
		want := "8000-" + sb.ID + ".localhost:" + strings.TrimPrefix(srv.URL[strings.LastIndex(srv.URL, ":"):], ":")
		if h, err := sb.Host(8000); err != nil || h != want {
			t.Errorf("Host(8000) = %q, %v; want %q", h, err, want)
		}
		dc, err := sdk.NewClient(sdk.Config{APIURL: srv.URL, APIKey: srv.APIKey, Domain: "sbx.example"})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := dc.Connect(opCtx(t), sb.ID, sdk.ConnectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h, err := s2.Host(8000); err != nil || h != want {
			t.Errorf("Host(8000) with the client's domain sbx.example = %q, %v; want %q", h, err, want)
		}
		req, err := sb.NewPortRequest(opCtx(t), http.MethodGet, sdk.EnvdPort, "/health", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Errorf("GET /health on envd's port through NewPortRequest = %s", resp.Status)
		}
	})

	t.Run("SignedURLs", func(t *testing.T) {
		// Whoever gets the URLs needs no key, token or header.
		up, err := sb.Files.UploadURL("/home/user/signed.txt", sdk.FileURLOptions{Expires: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("file", "signed.txt")
		io.WriteString(fw, "uploaded by URL")
		mw.Close()
		resp, err := http.Post(up, mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST to the upload URL = %s", resp.Status)
		}
		down, err := sb.Files.DownloadURL("/home/user/signed.txt", sdk.FileURLOptions{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err = http.Get(down)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != "uploaded by URL" {
			t.Errorf("GET of the download URL = %s %q", resp.Status, got)
		}
		// A URL signed for another file does not read this one.
		other, _ := sb.Files.DownloadURL("/etc/hostname", sdk.FileURLOptions{})
		resp, err = http.Get(strings.Replace(other, "%2Fetc%2Fhostname", "%2Fhome%2Fuser%2Fsigned.txt", 1))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Errorf("a URL signed for /etc/hostname read another file: %s", resp.Status)
		}
	})

	t.Run("EventsAndWebhooks", func(t *testing.T) {
		evs, err := c.ListEvents(opCtx(t), sdk.EventsOptions{SandboxID: sb.ID, Ascending: true})
		if err != nil || len(evs) == 0 || evs[0].Type != "sandbox.lifecycle.created" || evs[0].SandboxID != sb.ID {
			t.Errorf("ListEvents(%s) = %+v, %v; want its created event first", sb.ID, evs, err)
		}
		name, target, secret := "sdk-hook", "http://example.com/sdk-hook", strings.Repeat("s", 32)
		w, err := c.CreateWebhook(opCtx(t), sdk.WebhookOptions{Name: &name, URL: &target, Secret: &secret,
			Events: []string{"sandbox.lifecycle.killed"}})
		if err != nil {
			t.Fatal(err)
		}
		off := false
		if u, err := c.UpdateWebhook(opCtx(t), w.ID, sdk.WebhookOptions{Enabled: &off}); err != nil || u.Enabled || u.Name != name {
			t.Errorf("UpdateWebhook(enabled=false) = %+v, %v", u, err)
		}
		list, err := c.ListWebhooks(opCtx(t))
		if err != nil || len(list) != 1 || list[0].ID != w.ID || list[0].Enabled {
			t.Errorf("ListWebhooks = %+v, %v", list, err)
		}
		if ds, next, err := c.WebhookDeliveries(opCtx(t), w.ID, sdk.DeliveriesOptions{Limit: 10}); err != nil || len(ds) != 0 || next != "" {
			t.Errorf("WebhookDeliveries of a new webhook = %+v %q %v", ds, next, err)
		}
		if err := c.DeleteWebhook(opCtx(t), w.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetWebhook(opCtx(t), w.ID); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("GetWebhook after delete = %v; want ErrNotFound", err)
		}
	})

	t.Run("TemplateBuild", func(t *testing.T) {
		var logs []string
		b, err := c.BuildTemplate(opCtx(t), sdk.TemplateBuildOptions{Name: "sdk-built",
			Steps: []sdk.TemplateStep{{Type: "RUN", Args: []string{"echo from-sdk > /opt/sdk.txt", "root"}}},
			OnLog: func(e sdk.BuildLogEntry) { logs = append(logs, e.Message) }})
		if err != nil {
			t.Fatalf("BuildTemplate: %v\n%s", err, strings.Join(logs, "\n"))
		}
		if b.TemplateID == "" || len(logs) == 0 {
			t.Errorf("build %+v with %d log lines", b, len(logs))
		}
		s2 := create(t, c, sdk.CreateOptions{Template: "sdk-built"})
		if got := run(t, s2, "cat /opt/sdk.txt", sdk.RunOptions{}).Stdout; got != "from-sdk\n" {
			t.Errorf("sandbox from the SDK's template reads %q", got)
		}
		_, err = c.BuildTemplate(opCtx(t), sdk.TemplateBuildOptions{Name: "sdk-built",
			Steps: []sdk.TemplateStep{{Type: "RUN", Args: []string{"exit 7"}}}})
		var be *sdk.BuildError
		if !errors.As(err, &be) || !errors.Is(err, sdk.ErrInvalidArgument) || be.Step != "1" || !strings.Contains(be.Message, "exit code 7") {
			t.Errorf("failing build = %v; want a BuildError at step 1 with exit code 7", err)
		}
	})
}
