package jupyter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ExecuteRequest is the content of an execute_request.
type ExecuteRequest struct {
	Code            string            `json:"code"`
	Silent          bool              `json:"silent"`
	StoreHistory    bool              `json:"store_history"`
	UserExpressions map[string]string `json:"user_expressions"`
	AllowStdin      bool              `json:"allow_stdin"`
	StopOnError     bool              `json:"stop_on_error"`
}

// ExecuteReply is the content of an execute_reply.
type ExecuteReply struct {
	Status         string   `json:"status"` // ok, error, aborted
	ExecutionCount int      `json:"execution_count"`
	EName          string   `json:"ename"`
	EValue         string   `json:"evalue"`
	Traceback      []string `json:"traceback"`
}

func (k *Kernel) interruptQuietly() {
	ictx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := k.Interrupt(ictx); err != nil {
		k.log.Warn("interrupt after cancellation failed", "err", err)
	}
}

// ErrInterrupted is returned when ctx ended an execution and the kernel
// did not finish within the grace period after the interrupt.
var ErrInterrupted = errors.New("execution interrupted")

// ErrStillBusy is returned (wrapped with ErrInterrupted) when the kernel
// was still running the execution at the end of InterruptGrace: the cell
// ignores or survives SIGINT, and the kernel will answer nothing else
// until it is killed (Kill).
var ErrStillBusy = errors.New("kernel still busy")

// InterruptGrace is how long Execute waits for the kernel to wind down
// after interrupting it because ctx was cancelled.
const InterruptGrace = 5 * time.Second

// Execute runs req and calls onIOPub, in order, for every iopub message
// the execution produces except status messages. It returns when both the
// execute_reply and the final idle status have arrived, so no output is
// lost, or when the reply arrives on iopub (a kernel that sends it there,
// after all the request's output, sends no idle status). If ctx ends
// first, the kernel is interrupted and Execute keeps draining for up to
// InterruptGrace, then returns ctx's error. If the kernel dies, it returns
// an error wrapping ErrKernelDied.
func (k *Kernel) Execute(ctx context.Context, req ExecuteRequest, onIOPub func(*Message)) (*ExecuteReply, error) {
	if req.UserExpressions == nil {
		req.UserExpressions = map[string]string{}
	}
	c, err := k.request(k.shell, "execute_request", req)
	if err != nil {
		return nil, err
	}
	defer k.unregister(c)

	var (
		reply   *ExecuteReply
		idle    bool
		ctxDone = ctx.Done()
		grace   <-chan time.Time
		again   <-chan time.Time
		ctxErr  error
	)
	for reply == nil || !idle {
		select {
		case m := <-c.reply:
			var r ExecuteReply
			if err := json.Unmarshal(m.Content, &r); err != nil {
				return nil, fmt.Errorf("decode execute_reply: %w", err)
			}
			reply = &r
		case <-c.notify:
			for _, m := range c.drain() {
				if m.Header.MsgType == "execute_reply" {
					// The code interpreter's start-up file has the kernel
					// publish the reply as the request's last iopub
					// message, in place of the idle status: one message
					// fewer per run.
					var r ExecuteReply
					if err := json.Unmarshal(m.Content, &r); err != nil {
						return nil, fmt.Errorf("decode execute_reply: %w", err)
					}
					reply, idle = &r, true
					continue
				}
				if m.Header.MsgType == "status" {
					var s struct {
						ExecutionState string `json:"execution_state"`
					}
					_ = json.Unmarshal(m.Content, &s)
					if s.ExecutionState == "idle" {
						idle = true
					}
					continue
				}
				if onIOPub != nil {
					onIOPub(m)
				}
			}
		case <-k.dead:
			// Deliver what arrived before the death, then report it.
			for _, m := range c.drain() {
				if m.Header.MsgType != "status" && onIOPub != nil {
					onIOPub(m)
				}
			}
			return reply, k.deathError()
		case <-ctxDone:
			ctxErr = ctx.Err()
			ctxDone = nil
			grace = time.After(InterruptGrace)
			k.interruptQuietly()
			// An interrupt that lands before the kernel entered the user's
			// code is dropped; repeat it until the execution ends.
			retry := time.NewTicker(time.Second)
			defer retry.Stop()
			again = retry.C
		case <-again:
			if reply == nil {
				k.interruptQuietly()
			}
		case <-grace:
			return reply, fmt.Errorf("%w: %v; %w after %s", ErrInterrupted, ctxErr, ErrStillBusy, InterruptGrace)
		}
	}
	if ctxErr != nil {
		return reply, fmt.Errorf("%w: %v", ErrInterrupted, ctxErr)
	}
	return reply, nil
}
