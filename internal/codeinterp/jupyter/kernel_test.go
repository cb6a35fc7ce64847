package jupyter

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

// requireIPyKernel returns the python3 kernelspec, or skips (fails under
// SBX_REQUIRE_INTEGRATION=1) when ipykernel is not installed.
func requireIPyKernel(t testing.TB) *KernelSpec {
	t.Helper()
	spec, err := LoadSpec(DefaultKernelDirs, "python3")
	if err == nil {
		if _, lerr := exec.LookPath(spec.Argv[0]); lerr != nil {
			err = lerr
		}
	}
	if err != nil {
		testenv.Skip(t, "python3 Jupyter kernel not available (apt-get install python3-ipykernel): %v", err)
	}
	return spec
}

func startKernel(t testing.TB) *Kernel {
	t.Helper()
	spec := requireIPyKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k, err := Start(ctx, spec, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = k.Shutdown(context.Background()) })
	return k
}

type collected struct {
	mu   sync.Mutex
	msgs []*Message
}

func (c *collected) add(m *Message) { c.mu.Lock(); c.msgs = append(c.msgs, m); c.mu.Unlock() }

func (c *collected) types() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		out = append(out, m.Header.MsgType)
	}
	return out
}

func (c *collected) stdout() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, m := range c.msgs {
		if m.Header.MsgType == "stream" {
			var s struct{ Name, Text string }
			_ = json.Unmarshal(m.Content, &s)
			if s.Name == "stdout" {
				b.WriteString(s.Text)
			}
		}
	}
	return b.String()
}

func TestKernelExecute(t *testing.T) {
	k := startKernel(t)
	ctx := t.Context()

	info, err := k.KernelInfo(ctx)
	if err != nil || !strings.Contains(string(info), `"protocol_version"`) {
		t.Fatalf("KernelInfo = %s, %v", info, err)
	}
	if err := k.Heartbeat(ctx); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}

	tests := []struct {
		name      string
		code      string
		status    string
		wantTypes []string
		stdout    string
		ename     string
	}{
		{"expression", "x = 20\nx + 1", "ok", []string{"execute_input", "execute_result"}, "", ""},
		{"state persists", "print(x * 2)", "ok", []string{"execute_input", "stream"}, "40\n", ""},
		{"error", "1/0", "error", []string{"execute_input", "error"}, "", "ZeroDivisionError"},
		{"display", "from IPython.display import display, HTML\ndisplay(HTML('<b>b</b>'))", "ok", []string{"execute_input", "display_data"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c collected
			reply, err := k.Execute(ctx, ExecuteRequest{Code: tt.code, StoreHistory: true}, c.add)
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if reply.Status != tt.status || reply.EName != tt.ename {
				t.Fatalf("reply %+v, want status %s ename %q", reply, tt.status, tt.ename)
			}
			if got := c.types(); strings.Join(got, ",") != strings.Join(tt.wantTypes, ",") {
				t.Fatalf("iopub types %v, want %v", got, tt.wantTypes)
			}
			if got := c.stdout(); got != tt.stdout {
				t.Fatalf("stdout %q, want %q", got, tt.stdout)
			}
		})
	}
}

// Concurrent executions on one kernel must each see only their own output.
func TestKernelConcurrentRouting(t *testing.T) {
	k := startKernel(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c collected
			want := strings.Repeat("r", i+1)
			_, err := k.Execute(t.Context(), ExecuteRequest{Code: "print('" + want + "')"}, c.add)
			if err == nil && c.stdout() != want+"\n" {
				err = errors.New("request " + want + " got stdout " + c.stdout())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestKernelInterruptOnCancel(t *testing.T) {
	k := startKernel(t)
	ctx, cancel := context.WithCancel(t.Context())
	var c collected
	go func() {
		// Cancel once the loop has visibly started.
		for !strings.Contains(c.stdout(), "started") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	reply, err := k.Execute(ctx, ExecuteRequest{Code: "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)"}, c.add)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	if reply == nil || reply.EName != "KeyboardInterrupt" {
		t.Fatalf("reply %+v, want KeyboardInterrupt", reply)
	}
	// The kernel is usable and kept its state afterwards.
	var after collected
	if _, err := k.Execute(t.Context(), ExecuteRequest{Code: "print('alive')"}, after.add); err != nil || after.stdout() != "alive\n" {
		t.Fatalf("after interrupt: %v %q", err, after.stdout())
	}
}

func TestKernelDeathMidRun(t *testing.T) {
	k := startKernel(t)
	var c collected
	done := make(chan error, 1)
	go func() {
		_, err := k.Execute(t.Context(), ExecuteRequest{Code: "import os, time\nprint('dying', flush=True)\ntime.sleep(0.2)\nos._exit(3)"}, c.add)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrKernelDied) {
			t.Fatalf("err = %v, want ErrKernelDied", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Execute hung after the kernel died")
	}
	select {
	case <-k.Dead():
	default:
		t.Fatal("Dead() not closed")
	}
	if _, err := k.Execute(t.Context(), ExecuteRequest{Code: "1"}, nil); !errors.Is(err, ErrKernelDied) {
		t.Fatalf("execute on dead kernel: %v", err)
	}
}

func TestLoadSpecErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_ = os.MkdirAll(dir+"/bad", 0o755)
	_ = os.WriteFile(dir+"/bad/kernel.json", []byte(`{"argv": []}`), 0o644)
	for _, name := range []string{"missing", "../etc", "bad"} {
		if _, err := LoadSpec([]string{dir}, name); err == nil {
			t.Errorf("LoadSpec(%q) succeeded", name)
		}
	}
}

// BenchmarkExecute measures a bare execute_request round trip ("1+1").
func BenchmarkExecute(b *testing.B) {
	k := startKernel(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := k.Execute(ctx, ExecuteRequest{Code: "1+1", StoreHistory: true}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// A kernel that cannot start fails Start with what it printed, not a hang.
func TestStartFailureSaysWhy(t *testing.T) {
	python := requireIPyKernel(t).Argv[0]
	spec := &KernelSpec{Name: "broken", Argv: []string{python, "-m", "no_such_kernel_module_sbx", "-f", "{connection_file}"}}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	_, err := Start(ctx, spec, Options{})
	if !errors.Is(err, ErrKernelDied) || !strings.Contains(err.Error(), "No module named no_such_kernel_module_sbx") {
		t.Fatalf("err = %v", err)
	}
}

// Cancelling right after sending, before the kernel is in the user's code,
// must still stop the run (the first SIGINT may be dropped).
func TestKernelInterruptImmediately(t *testing.T) {
	k := startKernel(t)
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := k.Execute(ctx, ExecuteRequest{Code: "import time\nwhile True: time.sleep(0.05)"}, nil)
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("err = %v", err)
		}
		var c collected
		if _, err := k.Execute(t.Context(), ExecuteRequest{Code: "print('free')"}, c.add); err != nil || c.stdout() != "free\n" {
			t.Fatalf("kernel still busy: %v %q", err, c.stdout())
		}
	}
}
