package process

import (
	"encoding/json"
	"fmt"
	"syscall"

	"github.com/sbxdev/sbx/internal/envd/connect"
)

// Messages of E2B's process.proto in their ProtoJSON form. Optional proto
// fields are pointers so "absent" and "zero" stay distinct.

// Config is ProcessConfig.
type Config struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  *string           `json:"cwd,omitempty"`
}

// PTY is the PTY message.
type PTY struct {
	Size *PTYSize `json:"size,omitempty"`
}

// PTYSize is PTY.Size.
type PTYSize struct {
	Cols uint32 `json:"cols,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
}

// Info is ProcessInfo.
type Info struct {
	Config Config  `json:"config"`
	PID    uint32  `json:"pid,omitempty"`
	Tag    *string `json:"tag,omitempty"`
}

// Selector is ProcessSelector (oneof pid | tag).
type Selector struct {
	PID *uint32 `json:"pid,omitempty"`
	Tag *string `json:"tag,omitempty"`
}

// Input is ProcessInput (oneof stdin | pty).
type Input struct {
	Stdin []byte `json:"stdin,omitempty"`
	PTY   []byte `json:"pty,omitempty"`
}

// Event is ProcessEvent; exactly one field is set.
type Event struct {
	Start     *StartEvent `json:"start,omitempty"`
	Data      *DataEvent  `json:"data,omitempty"`
	End       *EndEvent   `json:"end,omitempty"`
	Keepalive *struct{}   `json:"keepalive,omitempty"`
}

// StartEvent carries the pid of a started process.
type StartEvent struct {
	PID uint32 `json:"pid"`
}

// DataEvent is one chunk of output.
type DataEvent struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	PTY    []byte `json:"pty,omitempty"`
}

// EndEvent describes how a process ended. ExitCode 0 and Exited false are
// omitted as proto3 defaults.
type EndEvent struct {
	ExitCode int32   `json:"exitCode,omitempty"`
	Exited   bool    `json:"exited,omitempty"`
	Status   string  `json:"status,omitempty"`
	Error    *string `json:"error,omitempty"`
}

// eventResponse is StartResponse and ConnectResponse.
type eventResponse struct {
	Event Event `json:"event"`
}

type (
	startRequest struct {
		Process Config  `json:"process"`
		PTY     *PTY    `json:"pty,omitempty"`
		Tag     *string `json:"tag,omitempty"`
		Stdin   *bool   `json:"stdin,omitempty"`
	}
	connectRequest struct {
		Process Selector `json:"process"`
	}
	listRequest  struct{}
	listResponse struct {
		Processes []Info `json:"processes"`
	}
	sendInputRequest struct {
		Process Selector `json:"process"`
		Input   Input    `json:"input"`
	}
	sendSignalRequest struct {
		Process Selector `json:"process"`
		Signal  Signal   `json:"signal"`
	}
	closeStdinRequest struct {
		Process Selector `json:"process"`
	}
	updateRequest struct {
		Process Selector `json:"process"`
		PTY     *PTY     `json:"pty,omitempty"`
	}
	streamInputRequest struct {
		Start *struct {
			Process Selector `json:"process"`
		} `json:"start,omitempty"`
		Data *struct {
			Input Input `json:"input"`
		} `json:"data,omitempty"`
		Keepalive *struct{} `json:"keepalive,omitempty"`
	}
	empty struct{}
)

// Signal is the proto enum Signal. ProtoJSON sends enums by name but
// parsers must accept numbers too.
type Signal syscall.Signal

// UnmarshalJSON accepts "SIGNAL_SIGKILL" or 9.
func (s *Signal) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		switch name {
		case "SIGNAL_SIGKILL":
			*s = Signal(syscall.SIGKILL)
		case "SIGNAL_SIGTERM":
			*s = Signal(syscall.SIGTERM)
		case "SIGNAL_UNSPECIFIED":
			*s = 0
		default:
			return fmt.Errorf("unknown signal %q, use SIGNAL_SIGTERM or SIGNAL_SIGKILL", name)
		}
		return nil
	}
	var n int32
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("signal must be an enum name or number: %w", err)
	}
	*s = Signal(n)
	return nil
}

func (sel Selector) String() string {
	if sel.PID != nil {
		return fmt.Sprintf("pid %d", *sel.PID)
	}
	if sel.Tag != nil {
		return fmt.Sprintf("tag %q", *sel.Tag)
	}
	return "no selector"
}

func notFound(sel Selector) error {
	if sel.PID != nil {
		return connect.Errorf(connect.NotFound, "process with pid %d not found", *sel.PID)
	}
	if sel.Tag != nil {
		return connect.Errorf(connect.NotFound, "process with tag %s not found", *sel.Tag)
	}
	return connect.Errorf(connect.InvalidArgument, "process selector needs a pid or a tag")
}
