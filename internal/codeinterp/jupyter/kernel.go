package jupyter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrKernelDied is returned by calls in flight when the kernel process exits.
var ErrKernelDied = errors.New("kernel died")

// ErrKernelClosed is returned by calls on a kernel that was shut down.
var ErrKernelClosed = errors.New("kernel shut down")

// ConnectionInfo is the content of a kernel connection file.
type ConnectionInfo struct {
	Transport       string `json:"transport"`
	IP              string `json:"ip"`
	ShellPort       int    `json:"shell_port"`
	IOPubPort       int    `json:"iopub_port"`
	StdinPort       int    `json:"stdin_port"`
	ControlPort     int    `json:"control_port"`
	HBPort          int    `json:"hb_port"`
	Key             string `json:"key"`
	SignatureScheme string `json:"signature_scheme"`
	KernelName      string `json:"kernel_name"`
}

func (c *ConnectionInfo) addr(port int) string {
	return net.JoinHostPort(c.IP, strconv.Itoa(port))
}

// Options configure a kernel process.
type Options struct {
	// Dir is the kernel's working directory ("" = inherit).
	Dir string
	// Env is the kernel's full environment (nil = inherit ours); the
	// kernelspec's env is added on top.
	Env []string
	// Output receives the kernel process's own stdout and stderr
	// (not the user code's output, which travels over iopub).
	Output io.Writer
	Logger *slog.Logger
	// Credential runs the kernel as another user (nil = ours); that user
	// gets the connection file.
	Credential *syscall.Credential
}

// Kernel is one running kernel process with its five channels connected.
// Its methods are safe for concurrent use.
type Kernel struct {
	spec    *KernelSpec
	log     *slog.Logger
	signer  *Signer
	session string
	conn    ConnectionInfo
	tmpDir  string

	cmd     *exec.Cmd
	dead    chan struct{} // closed when the process has exited
	exitErr error
	// reapMu orders signals to the kernel's group against its reaping:
	// once reaped, its pid (the group's id) may name another process's
	// group, so signals stop (reaped, set just before) and the group is
	// killed while the zombie still holds the number.
	reapMu  sync.Mutex
	reaped  bool
	outTail *tailBuffer // the process's last output, for error messages

	shell, control, stdin, iopub, hb *zmtpConn
	hbMu                             sync.Mutex

	mu      sync.Mutex
	pending map[string]*call
	closed  bool
}

// Start launches the kernel described by spec and returns once it answers
// kernel_info and its iopub subscription is live.
//
// A kernel that dies while starting is started again with fresh ports (up
// to three attempts): the ports are picked free but another process may
// take one before the kernel binds it.
func Start(ctx context.Context, spec *KernelSpec, opts Options) (*Kernel, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var k *Kernel
		if k, err = startOnce(ctx, spec, opts); err == nil || !errors.Is(err, ErrKernelDied) || ctx.Err() != nil {
			return k, err
		}
	}
	return nil, err
}

func startOnce(ctx context.Context, spec *KernelSpec, opts Options) (*Kernel, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, fmt.Errorf("pick kernel ports: %w", err)
	}
	k := &Kernel{
		spec:    spec,
		log:     log.With("kernel", spec.Name),
		session: newID(),
		conn: ConnectionInfo{
			Transport: "tcp", IP: "127.0.0.1",
			ShellPort: ports[0], IOPubPort: ports[1], StdinPort: ports[2], ControlPort: ports[3], HBPort: ports[4],
			Key: hex.EncodeToString(key), SignatureScheme: "hmac-sha256", KernelName: spec.Name,
		},
		dead:    make(chan struct{}),
		pending: map[string]*call{},
	}
	k.signer, _ = NewSigner(k.conn.SignatureScheme, []byte(k.conn.Key))
	if err := k.launch(opts); err != nil {
		return nil, err
	}
	if err := k.connect(ctx); err != nil {
		k.kill()
		return nil, fmt.Errorf("start kernel %s: %w", spec.Name, err)
	}
	if err := k.waitReady(ctx); err != nil {
		k.kill()
		return nil, fmt.Errorf("start kernel %s: %w", spec.Name, err)
	}
	return k, nil
}

func (k *Kernel) launch(opts Options) error {
	dir, err := os.MkdirTemp("", "sbx-kernel-")
	if err != nil {
		return fmt.Errorf("kernel connection dir: %w", err)
	}
	k.tmpDir = dir
	connFile := filepath.Join(dir, "kernel.json")
	b, _ := json.Marshal(k.conn)
	if err := os.WriteFile(connFile, b, 0o600); err != nil {
		return fmt.Errorf("write connection file: %w", err)
	}
	if c := opts.Credential; c != nil {
		// The kernel's user gets the file and may pass through the dir,
		// which stays ours: nothing in it can be replaced by a link.
		err := os.Chmod(dir, 0o711)
		if err == nil {
			err = os.Chown(connFile, int(c.Uid), int(c.Gid))
		}
		if err != nil {
			os.RemoveAll(dir)
			return fmt.Errorf("give the connection file to uid %d: %w", c.Uid, err)
		}
	}
	argv := k.spec.argv(connFile)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = opts.Dir
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	for kk, v := range k.spec.Env {
		env = append(env, kk+"="+v)
	}
	cmd.Env = env
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	k.outTail = &tailBuffer{max: 2048}
	out = io.MultiWriter(out, k.outTail)
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: an interrupt or kill reaches the kernel's children
	// (a `!sleep` or subprocess started by user code) and not us.
	// Killed with us, even by SIGKILL: a kernel must not outlive the
	// server (or a test binary that timed out) and hold on to a busy cell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: opts.Credential, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("start kernel %s (%s): %w", k.spec.Name, argv[0], err)
	}
	k.cmd = cmd
	go func() {
		exited := WaitExited(cmd.Process.Pid) // a zombie: its pid is still its own
		k.reapMu.Lock()
		// What a cell left in the group dies with the kernel, while the
		// group's id cannot name another; it also lets go of the output
		// pipe that Wait waits for. No signal follows the reaping.
		if exited {
			_ = SignalGroup(cmd.Process, syscall.SIGKILL)
		}
		k.reaped = true
		k.reapMu.Unlock()
		k.exitErr = cmd.Wait()
		k.log.Debug("kernel process exited", "pid", cmd.Process.Pid, "err", k.exitErr)
		close(k.dead)
	}()
	return nil
}

// connect dials every channel, retrying while the kernel is still binding.
func (k *Kernel) connect(ctx context.Context) error {
	ident := []byte(k.session)
	dial := func(port int, typ string, id []byte) (*zmtpConn, error) {
		for {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := dialZMTP(dctx, k.conn.addr(port), typ, id)
			cancel()
			if err == nil {
				return c, nil
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("connect to kernel port %d: %w (last error: %v)", port, ctx.Err(), err)
			case <-k.dead:
				return nil, k.deathError()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	var err error
	if k.iopub, err = dial(k.conn.IOPubPort, "SUB", nil); err != nil {
		return err
	}
	if err = k.iopub.Subscribe(nil); err != nil {
		return err
	}
	if k.shell, err = dial(k.conn.ShellPort, "DEALER", ident); err != nil {
		return err
	}
	if k.control, err = dial(k.conn.ControlPort, "DEALER", ident); err != nil {
		return err
	}
	if k.stdin, err = dial(k.conn.StdinPort, "DEALER", ident); err != nil {
		return err
	}
	if k.hb, err = dial(k.conn.HBPort, "REQ", nil); err != nil {
		return err
	}
	go k.readLoop(k.iopub, "iopub")
	go k.readLoop(k.shell, "shell")
	go k.readLoop(k.control, "control")
	go k.readLoop(k.stdin, "stdin")
	return nil
}

// waitReady sends kernel_info until both its reply and an iopub message
// for it arrive, which proves the iopub subscription has propagated (a
// SUB that is not yet subscribed silently loses messages).
func (k *Kernel) waitReady(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		c, err := k.request(k.shell, "kernel_info_request", struct{}{})
		if err != nil {
			return err
		}
		gotReply, gotIOPub := false, false
		timeout := time.NewTimer(500 * time.Millisecond)
	wait:
		for !(gotReply && gotIOPub) {
			select {
			case <-c.reply:
				gotReply = true
			case <-c.notify:
				if len(c.drain()) > 0 {
					gotIOPub = true
				}
			case <-timeout.C:
				if gotReply {
					break wait // reply but no iopub: retry
				}
			case <-k.dead:
				k.unregister(c)
				return k.deathError()
			case <-ctx.Done():
				k.unregister(c)
				return fmt.Errorf("wait for kernel_info: %w", ctx.Err())
			}
		}
		timeout.Stop()
		k.unregister(c)
		if gotReply && gotIOPub {
			return nil
		}
		k.log.Debug("iopub not live yet, retrying kernel_info", "attempt", attempt)
	}
}

func (k *Kernel) deathError() error {
	<-k.dead
	status := "exited with status 0"
	if k.exitErr != nil {
		status = k.exitErr.Error()
	}
	if tail := k.outTail.String(); tail != "" {
		// What the kernel printed last usually says why (a missing
		// module, a bad argument).
		return fmt.Errorf("%w: %s; its last output: %s", ErrKernelDied, status, tail)
	}
	return fmt.Errorf("%w: %s", ErrKernelDied, status)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// Dead is closed when the kernel process has exited.
func (k *Kernel) Dead() <-chan struct{} { return k.dead }

// Spec returns the kernelspec the kernel was started from.
func (k *Kernel) Spec() *KernelSpec { return k.spec }

// Pid returns the kernel process id.
func (k *Kernel) Pid() int { return k.cmd.Process.Pid }

// call collects everything addressed to one request: its reply on
// shell/control and the iopub messages whose parent is the request. The
// iopub queue is unbounded so a slow HTTP client never stalls the reader
// (the kernel's PUB socket would drop messages instead of blocking).
type call struct {
	msgID  string
	reply  chan *Message // buffered 1
	notify chan struct{} // buffered 1, poked when queue grows
	mu     sync.Mutex
	queue  []*Message
}

func (c *call) push(m *Message) {
	c.mu.Lock()
	c.queue = append(c.queue, m)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *call) drain() []*Message {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	return q
}

func (k *Kernel) request(ch *zmtpConn, msgType string, content any) (*call, error) {
	m, err := newMessage(k.session, msgType, content)
	if err != nil {
		return nil, err
	}
	c := &call{msgID: m.Header.MsgID, reply: make(chan *Message, 1), notify: make(chan struct{}, 1)}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil, ErrKernelClosed
	}
	k.pending[c.msgID] = c
	k.mu.Unlock()
	frames, err := k.signer.Encode(m)
	if err == nil {
		err = ch.Send(frames)
	}
	if err != nil {
		k.unregister(c)
		select {
		case <-k.dead:
			return nil, k.deathError()
		default:
		}
		return nil, fmt.Errorf("send %s: %w", msgType, err)
	}
	return c, nil
}

func (k *Kernel) unregister(c *call) {
	k.mu.Lock()
	delete(k.pending, c.msgID)
	k.mu.Unlock()
}

func (k *Kernel) lookup(msgID string) *call {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pending[msgID]
}

func (k *Kernel) readLoop(ch *zmtpConn, name string) {
	for {
		frames, err := ch.Recv()
		if err != nil {
			return // closed or kernel gone; callers watch k.dead
		}
		m, err := k.signer.Decode(frames)
		if err != nil {
			k.log.Warn("dropping kernel message", "channel", name, "err", err)
			continue
		}
		switch name {
		case "iopub":
			if c := k.lookup(m.ParentHeader.MsgID); c != nil {
				c.push(m)
			}
		case "stdin":
			// allow_stdin is false on every request we send, so a kernel
			// should never ask; answer anyway so it cannot hang waiting.
			if m.Header.MsgType == "input_request" {
				reply, _ := newMessage(k.session, "input_reply", map[string]string{"value": ""})
				reply.ParentHeader = m.Header
				reply.Identities = m.Identities
				if f, err := k.signer.Encode(reply); err == nil {
					_ = ch.Send(f)
				}
			}
		default:
			if c := k.lookup(m.ParentHeader.MsgID); c != nil {
				select {
				case c.reply <- m:
				default:
				}
			}
		}
	}
}

// KernelInfo returns the content of a kernel_info_reply.
func (k *Kernel) KernelInfo(ctx context.Context) (json.RawMessage, error) {
	m, err := k.roundTrip(ctx, k.shell, "kernel_info_request", struct{}{})
	if err != nil {
		return nil, err
	}
	return m.Content, nil
}

func (k *Kernel) roundTrip(ctx context.Context, ch *zmtpConn, msgType string, content any) (*Message, error) {
	c, err := k.request(ch, msgType, content)
	if err != nil {
		return nil, err
	}
	defer k.unregister(c)
	select {
	case m := <-c.reply:
		return m, nil
	case <-k.dead:
		return nil, k.deathError()
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", msgType, ctx.Err())
	}
}

// Heartbeat pings the kernel's heartbeat channel and waits for the echo.
func (k *Kernel) Heartbeat(ctx context.Context) error {
	k.hbMu.Lock()
	defer k.hbMu.Unlock()
	payload := []byte(newID())
	// REQ framing: empty delimiter, then the payload.
	if err := k.hb.Send([][]byte{{}, payload}); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		frames, err := k.hb.Recv()
		if err == nil && (len(frames) != 2 || string(frames[1]) != string(payload)) {
			err = errors.New("unexpected heartbeat echo")
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The REQ socket is now out of step; it cannot be reused.
		return fmt.Errorf("heartbeat: %w", ctx.Err())
	}
}

// Interrupt interrupts the running execution: with an interrupt_request
// on the control channel if the kernelspec asks for interrupt_mode
// "message", otherwise with SIGINT to the kernel's process group.
func (k *Kernel) Interrupt(ctx context.Context) error {
	if k.spec.InterruptMode == "message" {
		_, err := k.roundTrip(ctx, k.control, "interrupt_request", struct{}{})
		return err
	}
	if err := k.signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("interrupt kernel: %w", err)
	}
	return nil
}

// signal sends sig to the kernel's group (SignalGroup) unless the kernel
// was reaped, when its number may be another's: ErrKernelDied.
func (k *Kernel) signal(sig syscall.Signal) error {
	k.reapMu.Lock()
	defer k.reapMu.Unlock()
	if k.reaped {
		return ErrKernelDied
	}
	return SignalGroup(k.cmd.Process, sig)
}

// WaitExited returns true once the child pid has exited, leaving it
// unreaped (WNOWAIT: its number stays its own until exec.Cmd.Wait); false
// if that cannot be known.
func WaitExited(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

// SignalGroup sends sig to the process group an interpreter (a kernel, a
// REPL process) was started in as its leader, and to the interpreter
// itself when code it ran moved it to another group (setpgid), out of the
// first one's reach: else an interrupt or a kill would miss it, and a
// context would wait behind it for good. The interpreter itself is
// signalled through p (its pidfd), not by number: once it was reaped its
// pid may name any other process, and a kill by number would hit that.
func SignalGroup(p *os.Process, sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid, sig)
	if pg, gerr := syscall.Getpgid(p.Pid); gerr == nil && pg != p.Pid {
		err = p.Signal(sig)
	}
	return err
}

// Shutdown asks the kernel to exit, kills it if it does not within the
// context's deadline (or 2 s), and releases its sockets and files.
func (k *Kernel) Shutdown(ctx context.Context) error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		<-k.dead
		return nil
	}
	k.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := k.roundTrip(sctx, k.control, "shutdown_request", map[string]bool{"restart": false}); err == nil {
		select {
		case <-k.dead:
		case <-sctx.Done():
		}
	}
	k.kill()
	return nil
}

// Kill kills the kernel at once, without asking it to shut down (a
// kernel stuck in a cell that ignores SIGINT answers nothing): its process
// group and, if it left that group, the kernel itself. It returns once the
// process is gone; calls in flight then fail with ErrKernelDied.
func (k *Kernel) Kill() { k.kill() }

// kill SIGKILLs the process group, waits for exit and cleans up.
func (k *Kernel) kill() {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	if k.cmd != nil && k.cmd.Process != nil {
		_ = k.signal(syscall.SIGKILL)
		<-k.dead
	}
	for _, c := range []*zmtpConn{k.shell, k.control, k.stdin, k.iopub, k.hb} {
		if c != nil {
			c.Close()
		}
	}
	if k.tmpDir != "" {
		os.RemoveAll(k.tmpDir)
	}
}

// freePorts reserves n distinct loopback ports by binding them all at once
// and releasing them just before the kernel binds them.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
