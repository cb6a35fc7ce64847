package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// replProc is one long-lived interpreter process (bash, node) whose stdout
// and stderr arrive as chunks. The bash and JavaScript runners differ only
// in how they hand code to it and learn that a cell ended.
type replProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	chunks chan outChunk
	// side carries lines from an extra pipe (node's fd 3, one JSON reply
	// a line); nil when the process has none, so it never selects.
	side chan []byte
	dead chan struct{}
	dir  string // private dir for cell files; "" when there is none
	// reap waits for the process (once). A process that died is left a
	// zombie until release: its pid, and so its process group's id, stay
	// its own, and kill may signal the group without hitting another that
	// reused the number.
	reap func()

	// killed is set when an interrupt gave way to SIGKILL.
	killed atomic.Bool
	// told is set once its death was reported to a run (or recorded for
	// the next one): a death nobody was told of is told by the next run.
	told atomic.Bool
	// The idle drainer (see idle) runs while idleStop is non-nil.
	idleMu             sync.Mutex
	idleStop, idleDone chan struct{}
}

type outChunk struct {
	stderr bool
	data   []byte
}

// startRepl starts cmd in its own process group, so an interrupt reaches
// what the cell runs, and pumps its output into chunks (cmd.SysProcAttr
// may carry the user to run as). If side is
// non-nil, lines read from it go to the side channel. what names the
// process in errors.
func startRepl(cmd *exec.Cmd, what string, side *os.File) (*replProc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Killed with us, even by SIGKILL: no interpreter outlives the server.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	p := &replProc{cmd: cmd, stdin: stdin, chunks: make(chan outChunk, 64), dead: make(chan struct{}),
		reap: sync.OnceFunc(func() { _ = cmd.Wait() })}
	var wg sync.WaitGroup
	pump := func(rd io.Reader, isErr bool) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := rd.Read(buf)
			if n > 0 {
				p.chunks <- outChunk{stderr: isErr, data: append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pump(stdout, false)
	go pump(stderr, true)
	if side != nil {
		p.side = make(chan []byte, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer side.Close()
			rd := bufio.NewReaderSize(side, 64<<10)
			for {
				line, err := readSideLine(rd, maxSideLine)
				if line != nil {
					p.side <- line
				}
				if err != nil {
					return
				}
			}
		}()
	}
	go func() {
		pumped := make(chan struct{})
		go func() { wg.Wait(); close(pumped) }()
		// All output read before we report the death; but a process
		// the cell left in a session of its own may hold the pipes open
		// for ever, and the death must still be seen: once the process
		// is gone its pipes get a grace period, then they are closed.
		exited := make(chan bool, 1)
		go func() { exited <- jupyter.WaitExited(cmd.Process.Pid) }()
		var seen bool
		select {
		case <-pumped:
			seen = <-exited
		case seen = <-exited:
			if !seen {
				<-pumped
				break
			}
			select {
			case <-pumped:
			case <-time.After(pipeGrace):
			}
		}
		if !seen {
			p.reap() // exit not seen without reaping: as before, the pipes told
		}
		stdout.Close() // the pumps end
		stderr.Close()
		if side != nil {
			side.Close()
		}
		wg.Wait()
		close(p.dead)
	}()
	return p, nil
}

// pipeGrace is how long the output of a process that ended is still read
// while something else holds its pipes.
const pipeGrace = time.Second

// maxSideLine bounds one line of a side channel (a frame of the Python
// runner: a result with its images).
const maxSideLine = 64 << 20

// tooLong stands for a side line over maxSideLine, which is dropped: the
// Python runner shows it as an error, the node driver ignores it. Reading
// goes on, so the process never blocks on a pipe nobody reads.
var tooLong = []byte(`{"t":"error","ename":"OutputTooLarge","evalue":"an output of more than 64 MiB was dropped","traceback":[]}`)

// readSideLine returns the next line without its newline (tooLong for
// one over max), or an error at the end.
func readSideLine(rd *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	over := false
	for {
		frag, err := rd.ReadSlice('\n')
		if !over {
			if len(line)+len(frag) > max+1 {
				over, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return nil, err // a last line without its newline is cut short
		case over:
			return tooLong, nil
		}
		return line[:len(line)-1], nil
	}
}

// kill ends the process group and drains its output so the readers can
// finish and the process is reaped, then removes its cell files.
func (p *replProc) kill() {
	_ = jupyter.SignalGroup(p.cmd.Process, syscall.SIGKILL)
	for {
		select {
		case <-p.chunks:
			continue
		case <-p.side:
			continue
		case <-p.dead:
		}
		break
	}
	p.release()
}

// idle discards the process's output until hold: what it writes between
// runs (a thread's prints, a child's output after the cell ended) belongs
// to no run, as ipykernel's output for a finished request reaches nobody.
// Left unread, it filled the channels and blocked their pumps, and a
// process that died then was never seen dead: every later run wrote to
// its closed stdin and reported that the process had exited.
func (p *replProc) idle() {
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	if p.idleStop != nil {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	p.idleStop, p.idleDone = stop, done
	go func() {
		defer close(done)
		for {
			select {
			case <-p.chunks:
			case <-p.side:
			case <-stop:
				return
			case <-p.dead:
				return // the pumps are over; flush may want what is left
			}
		}
	}()
}

// hold stops the idle drainer: a run reads the output from now on. It is
// called before the run's request is written, so none of its output is
// discarded.
func (p *replProc) hold() {
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	if p.idleStop != nil {
		close(p.idleStop)
		<-p.idleDone
		p.idleStop, p.idleDone = nil, nil
	}
}

// flush emits what the pumps delivered after the process died (its last
// words: a crash's message), so the error that follows can be understood.
func (p *replProc) flush(out emitter) {
	for {
		select {
		case c := <-p.chunks:
			typ := "stdout"
			if c.stderr {
				typ = "stderr"
			}
			out.emit(lineStream{Type: typ, Text: string(c.data), Timestamp: timestamp("")})
			continue
		default:
		}
		return
	}
}

// release reaps a process that is gone and removes what it left behind.
func (p *replProc) release() {
	p.reap()
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

// newMarker returns a random id and the end marker built from it, which
// the interpreter prints (followed by a status and \x1e) after each cell.
func newMarker() (id, marker string) {
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	id = hex.EncodeToString(nonce[:])
	return id, "\x1eSBX" + id + ":"
}

// streamChunk adds c to its stream's buffer and emits the text that is
// certainly output. fin reports that the stream's end marker arrived, with
// the status printed after it; i is the stream (0 stdout, 1 stderr).
func streamChunk(bufs *[2]bytes.Buffer, c outChunk, marker string, out emitter) (i, status int, fin bool) {
	if c.stderr {
		i = 1
	}
	bufs[i].Write(c.data)
	text, status, fin := scanMarker(&bufs[i], marker)
	if text != "" {
		out.emit(lineStream{Type: [2]string{"stdout", "stderr"}[i], Text: text, Timestamp: timestamp("")})
	}
	return i, status, fin
}

// scanMarker removes and returns the text in buf that is certainly output,
// holding back a possible partial marker. finished reports that the marker
// and its status were found (anything after them is discarded).
func scanMarker(buf *bytes.Buffer, marker string) (text string, status int, finished bool) {
	b := buf.Bytes()
	if i := bytes.Index(b, []byte(marker)); i >= 0 {
		rest := b[i+len(marker):]
		j := bytes.IndexByte(rest, 0x1e)
		if j < 0 {
			text = string(b[:i])
			remaining := append([]byte(nil), b[i:]...)
			buf.Reset()
			buf.Write(remaining)
			return text, 0, false
		}
		status, _ = strconv.Atoi(string(rest[:j]))
		text = string(b[:i])
		buf.Reset()
		return text, status, true
	}
	// Hold back the longest suffix that is a prefix of the marker.
	keep := 0
	for n := min(len(marker)-1, len(b)); n > 0; n-- {
		if bytes.HasSuffix(b, []byte(marker[:n])) {
			keep = n
			break
		}
	}
	text = string(b[:len(b)-keep])
	remaining := append([]byte(nil), b[len(b)-keep:]...)
	buf.Reset()
	buf.Write(remaining)
	return text, 0, false
}

// interruptUntil sends SIGINT to a process group until finished (a signal
// may land before the cell started), and SIGKILL after 5 s (setting
// killed), as jupyter.Kernel.Execute and the kernel runner do.
func interruptUntil(proc *os.Process, finished, dead <-chan struct{}, killed *atomic.Bool) {
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		// A tick and finished can be ready together, and select picks
		// either: check finished first, or a SIGINT meant for this cell
		// lands on the next one.
		select {
		case <-finished:
			return
		case <-dead:
			return
		default:
		}
		_ = jupyter.SignalGroup(proc, syscall.SIGINT)
		select {
		case <-tick.C:
		case <-deadline:
			killed.Store(true)
			_ = jupyter.SignalGroup(proc, syscall.SIGKILL)
			return
		case <-finished:
			return
		case <-dead:
			return
		}
	}
}

// wait streams a cell's output until the end marker has come on stdout
// and stderr and, when the process has a side channel, sideDone has
// reported true for one of its lines. It interrupts the cell when ctx ends
// (repeatedly: one SIGINT can land between two commands, where bash only
// runs the trap, or return from a function, not the cell). status is what
// followed the stdout marker; died reports that the process ended first,
// leaving whatever it wrote last in p.chunks.
func (p *replProc) wait(ctx context.Context, marker string, out emitter, sideDone func(line []byte) bool) (status int, died bool) {
	finished := make(chan struct{})
	var interrupter chan struct{} // closed when the interrupt loop is over
	defer func() {
		close(finished)
		if interrupter != nil {
			<-interrupter // no SIGINT of this cell may reach the next one
		}
	}()
	var (
		bufs    [2]bytes.Buffer
		done    [2]bool
		side    = sideDone == nil
		ctxDone = ctx.Done()
	)
	for !done[0] || !done[1] || !side {
		select {
		case c := <-p.chunks:
			i, st, fin := streamChunk(&bufs, c, marker, out)
			if fin {
				done[i] = true
				if i == 0 {
					status = st
				}
			}
		case line := <-p.side:
			if sideDone(line) {
				side = true
			}
		case <-p.dead:
			return status, true
		case <-ctxDone:
			ctxDone = nil
			interrupter = make(chan struct{})
			go func() {
				defer close(interrupter)
				interruptUntil(p.cmd.Process, finished, p.dead, &p.killed)
			}()
		}
	}
	return status, false
}

// replSession keeps one interpreter process per context, so state persists
// between runs like in a kernel, and replaces it when it died or on
// Restart. Embedded by the bash, JavaScript and Python runners.
type replSession struct {
	what  string // "bash" or "node", names the process in messages
	start func() (*replProc, error)

	mu         sync.Mutex // guards the fields below
	proc       *replProc
	count      int
	restarting bool
	closed     bool   // Close was called: no process is started again
	lost       string // why the last process's state was lost unseen; told to the next run
}

// errToldLost ends a run that reported, in place of running its code,
// that the context's state was lost after an abandoned run.
var errToldLost = errors.New("context restarted after an abandoned run; code not run")

// errContextClosed is returned by runs on a context that was closed.
var errContextClosed = errors.New("context closed")

func (s *replSession) init(what string, start func() (*replProc, error)) error {
	s.what, s.start = what, start
	p, err := s.launch()
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}

// launch starts a process whose output is discarded until a run holds it.
func (s *replSession) launch() (*replProc, error) {
	p, err := s.start()
	if err != nil {
		return nil, err
	}
	p.idle()
	return p, nil
}

// live returns the process to run a request in, held (see hold), starting
// a new one if the last died. The caller calls p.idle when done with it.
func (s *replSession) live() (*replProc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%s: %w", s.what, errContextClosed)
	}
	select {
	case <-s.proc.dead:
		s.proc.release()
		if s.lost == "" && !s.restarting && !s.proc.told.Load() {
			s.lost = diedBetweenRuns("The "+s.what+" process", exitText(s.proc.cmd.ProcessState))
		}
		p, err := s.launch()
		if err != nil {
			return nil, err
		}
		s.proc = p
	default:
	}
	s.proc.hold()
	return s.proc, nil
}

// begin returns the process to run the next cell in, held, and emits the
// cell's execution count; see beginCount.
func (s *replSession) begin(out emitter) (*replProc, error) {
	p, _, err := s.beginCount(out)
	return p, err
}

// beginCount is begin also returning the execution count. After an
// abandoned run cost the context its state, it reports that once instead
// (errToldLost), with the process already started afresh.
func (s *replSession) beginCount(out emitter) (*replProc, int, error) {
	p, err := s.live()
	if err != nil {
		out.emit(errorLine("KernelStartError", err.Error(), nil))
		return nil, 0, err
	}
	s.mu.Lock()
	if why := s.lost; why != "" {
		s.lost = ""
		s.mu.Unlock()
		p.idle()
		out.emit(errorLine("ContextRestarted", why, nil))
		return nil, 0, errToldLost
	}
	s.count++
	count := s.count
	s.mu.Unlock()
	out.emit(lineExecutionCount{Type: "number_of_executions", ExecutionCount: count})
	return p, count, nil
}

// died reports a process that ended during a cell, as a restart when one
// was asked for. When the cell's client had gone (ctx ended), nobody reads
// the report: the next run gets it (beginCount).
func (s *replSession) died(ctx context.Context, p *replProc, out emitter) error {
	p.told.Store(true)
	s.mu.Lock()
	restarting := s.restarting
	if ctx.Err() != nil && !restarting {
		s.lost = abandonedDied
		if p.killed.Load() {
			s.lost = abandonedKilled
		}
	}
	s.mu.Unlock()
	if restarting {
		out.emit(errorLine("ContextRestarting", "Context was restarted during execution", nil))
	} else {
		out.emit(errorLine("UnexpectedEndOfExecution", "The "+s.what+" process exited during execution; its state is lost and it restarts on the next run", nil))
	}
	return nil
}

// writeFailed reports a process that cannot take a request (writing it
// failed: the process is gone, or closed its end), after killing it, so
// the next run starts a new one even if its death was never seen (a pump
// blocked on output nobody read). kill drains the channels until the
// pumps end.
func (s *replSession) writeFailed(ctx context.Context, p *replProc, out emitter) error {
	p.kill()
	return s.died(ctx, p, out)
}

func (s *replSession) Restart(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("restart %s: %w", s.what, errContextClosed)
	}
	old := s.proc
	s.restarting = true
	s.lost = ""
	s.mu.Unlock()
	old.kill()
	p, err := s.launch()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarting = false
	if err != nil {
		return err
	}
	if s.closed { // closed while this one started: it must not outlive us
		p.kill()
		return fmt.Errorf("restart %s: %w", s.what, errContextClosed)
	}
	s.proc, s.count = p, 0
	return nil
}

func (s *replSession) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	p := s.proc
	s.mu.Unlock()
	p.kill()
	return nil
}
