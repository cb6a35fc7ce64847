package process

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// drainGrace is how long output is still read after the process exited
// while nothing arrives. Background children that inherited stdout keep the
// pipe open forever; waiting for their EOF would hang the caller.
const drainGrace = 50 * time.Millisecond

// drainReads bounds the reads of output left in a pipe after drainGrace.
const drainReads = 64

// readBufs recycles the read buffers of output pumps.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// proc is one started process and the fan-out of its output.
type proc struct {
	pid    uint32
	config Config
	tag    *string

	cmd   *exec.Cmd
	pty   *os.File // master side, nil without PTY
	outs  []*os.File
	exits atomic.Bool // process reaped; pumps switch to draining

	inMu  sync.Mutex
	stdin *os.File // write end of the stdin pipe, nil when closed or absent

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	end  *EndEvent
	done chan struct{} // closed after the last output and end are known
}

// subscriber receives a process's output until done or gone is closed.
type subscriber struct {
	ch   chan *DataEvent
	gone chan struct{}
}

func (p *proc) subscribe() *subscriber {
	s := &subscriber{ch: make(chan *DataEvent, 16), gone: make(chan struct{})}
	p.mu.Lock()
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	return s
}

func (p *proc) unsubscribe(s *subscriber) {
	close(s.gone)
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
}

// broadcast hands ev to every subscriber. It blocks on slow subscribers
// (backpressure on the process, as a terminal would), but never on one that
// went away.
func (p *proc) broadcast(ev *DataEvent) {
	p.mu.Lock()
	subs := make([]*subscriber, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- ev:
		case <-s.gone:
		}
	}
}

// pump copies one output stream into data events until EOF, or until the
// process has exited and the stream stayed idle for drainGrace.
func (p *proc) pump(f *os.File, wrap func([]byte) *DataEvent, wg *sync.WaitGroup) {
	defer wg.Done()
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		if p.exits.Load() {
			_ = f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := f.Read(buf)
		if n > 0 {
			p.broadcast(wrap(append([]byte(nil), buf[:n]...)))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The drain deadline can pass while this goroutine waits for
			// a CPU (a loaded host), with output already in the pipe: a
			// deadline check comes before the read, so take what is
			// there without waiting before giving up.
			p.drainNow(f, buf, wrap)
			return
		}
		if err != nil {
			// EOF, or EIO from a PTY whose slave side closed: the stream
			// is over.
			return
		}
	}
}

// wait reaps the process, drains its output and publishes the end event.
// waited runs as soon as the process is reaped.
func (p *proc) wait(wg *sync.WaitGroup, waited, onExit func()) {
	err := p.cmd.Wait()
	waited()
	p.exits.Store(true)
	for _, f := range p.outs {
		// Wakes a pump blocked in Read so it rechecks with the grace deadline.
		_ = f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	wg.Wait()
	for _, f := range p.outs {
		_ = f.Close()
	}
	p.closeStdin()

	st := p.cmd.ProcessState
	end := &EndEvent{ExitCode: int32(st.ExitCode()), Exited: st.Exited(), Status: st.String()}
	if err != nil {
		// As envd: a non-zero exit reports its status as the error too,
		// which the SDKs show as the CommandExitError message.
		msg := err.Error()
		end.Error = &msg
	}
	p.mu.Lock()
	p.end = end
	p.mu.Unlock()
	close(p.done)
	onExit()
}

func (p *proc) closeStdin() bool {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.stdin == nil {
		return false
	}
	_ = p.stdin.Close()
	p.stdin = nil
	return true
}

func (p *proc) writeStdin(b []byte) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.stdin == nil {
		return errStdinClosed
	}
	_, err := p.stdin.Write(b)
	return err
}

var errStdinClosed = errors.New("stdin is not open: start the process with stdin enabled, and do not call CloseStdin before sending")

// signal sends sig to the process group so that children started by the
// shell die too; it falls back to the process when it has no own group.
func (p *proc) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-int(p.pid), sig); err == nil {
		return nil
	}
	return syscall.Kill(int(p.pid), sig)
}

func (p *proc) info() Info {
	return Info{Config: p.config, PID: p.pid, Tag: p.tag}
}

// drainNow broadcasts what f holds now, reading without waiting; at most
// drainReads reads, as a child left running may keep writing.
func (p *proc) drainNow(f *os.File, buf []byte, wrap func([]byte) *DataEvent) {
	rc, err := f.SyscallConn()
	// No deadline: the poller checks it before calling the read function.
	if err != nil || f.SetReadDeadline(time.Time{}) != nil {
		return
	}
	for range drainReads {
		n := 0
		if rc.Read(func(fd uintptr) bool {
			n, _ = syscall.Read(int(fd), buf)
			return true // never wait: EAGAIN ends the drain
		}) != nil || n <= 0 {
			return
		}
		p.broadcast(wrap(append([]byte(nil), buf[:n]...)))
	}
}
