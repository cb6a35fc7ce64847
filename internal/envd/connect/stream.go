package connect

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Envelope flags of the Connect streaming protocol.
const (
	flagCompressed = 0x01
	FlagEndStream  = 0x02
)

// StreamContentType is the media type of Connect JSON streams.
const StreamContentType = "application/connect+json"

// AppendEnvelope appends one envelope ([flags][len BE32][payload]) to dst.
func AppendEnvelope(dst []byte, flags byte, payload []byte) []byte {
	dst = append(dst, flags, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(payload)))
	return append(dst, payload...)
}

// readEnvelope reads one envelope from r; io.EOF means no envelope at all.
func readEnvelope(r io.Reader) (flags byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, Errorf(InvalidArgument, "truncated envelope header")
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessage {
		return 0, nil, Errorf(ResourceExhausted, "message of %d bytes is larger than %d", n, maxMessage)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, Errorf(InvalidArgument, "truncated envelope: %v", err)
	}
	return hdr[0], payload, nil
}

// Stream is the sending half of a server stream. It is used by one
// goroutine: the handler.
type Stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	buf     []byte
	started bool
	ka      *time.Timer
	kaEvery time.Duration
}

// Send writes msg as one envelope and flushes it to the client.
func (s *Stream) Send(msg any) error {
	if err := s.Queue(msg); err != nil {
		return err
	}
	return s.Flush()
}

// Queue writes msg as one envelope without flushing it: it leaves with
// the next Send or Flush, or at the end of the stream. For a message
// followed at once by another: each flush is a write(2) for envd, a read
// and a write for the host's proxy, and a read for the client.
func (s *Stream) Queue(msg any) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode stream message: %w", err)
	}
	return s.queue(0, payload)
}

// Flush sends what Queue left behind.
func (s *Stream) Flush() error { return s.rc.Flush() }

func (s *Stream) queue(flags byte, payload []byte) error {
	s.started = true
	s.buf = AppendEnvelope(s.buf[:0], flags, payload)
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	if s.ka != nil {
		s.ka.Reset(s.kaEvery)
	}
	return nil
}

func (s *Stream) write(flags byte, payload []byte) error {
	if err := s.queue(flags, payload); err != nil {
		return err
	}
	return s.Flush()
}

// Keepalive fires when nothing was sent for the client's
// Keepalive-Ping-Interval; the handler then sends its keepalive event.
func (s *Stream) Keepalive() <-chan time.Time { return s.ka.C }

// DefaultKeepalive is envd's interval when the client sends none.
const DefaultKeepalive = 90 * time.Second

// ServerStream serves a server-streaming method. fn sends messages through
// the Stream; its error (or nil) becomes the end-of-stream message.
func ServerStream[Req any](fn func(ctx context.Context, r *http.Request, req *Req, s *Stream) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeUnaryError(w, Errorf(Unimplemented, "method %s is not allowed, use POST", r.Method))
			return
		}
		if ct := mediaType(r.Header.Get("Content-Type")); ct != StreamContentType {
			unsupportedMediaType(w, ct, StreamContentType)
			return
		}
		w.Header().Set("Content-Type", StreamContentType)
		s := &Stream{w: w, rc: http.NewResponseController(w), kaEvery: KeepaliveInterval(r, DefaultKeepalive)}
		s.ka = time.NewTimer(s.kaEvery)
		defer s.ka.Stop()
		err := serveStream(r, s, fn)
		end := []byte("{}")
		if err != nil {
			end, _ = json.Marshal(struct {
				Error *Error `json:"error"`
			}{asError(err)})
		}
		// No flush: net/http sends it with the response's last chunk,
		// and whatever fn queued before it, in one write.
		_ = s.queue(FlagEndStream, end)
	})
}

func serveStream[Req any](r *http.Request, s *Stream, fn func(context.Context, *http.Request, *Req, *Stream) error) error {
	ctx, cancel, err := withTimeout(r)
	if err != nil {
		return err
	}
	defer cancel()
	flags, payload, err := readEnvelope(r.Body)
	if err != nil && err != io.EOF {
		return err
	}
	if flags&flagCompressed != 0 {
		return Errorf(Unimplemented, "compressed messages are not supported; send Connect-Content-Encoding identity")
	}
	var req Req
	if err := decode(payload, &req); err != nil {
		return err
	}
	return fn(ctx, r, &req, s)
}

// ClientStream serves a client-streaming method: fn pulls request messages
// with next (false at the end of the request body) and returns one response.
func ClientStream[Req, Resp any](fn func(ctx context.Context, r *http.Request, next func(*Req) (bool, error)) (*Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := mediaType(r.Header.Get("Content-Type")); r.Method != http.MethodPost || ct != StreamContentType {
			writeUnaryError(w, Errorf(Unknown, "client streams need POST with %s", StreamContentType))
			return
		}
		w.Header().Set("Content-Type", StreamContentType)
		s := &Stream{w: w, rc: http.NewResponseController(w)}
		ctx, cancel, err := withTimeout(r)
		var resp *Resp
		if err == nil {
			defer cancel()
			next := func(m *Req) (bool, error) {
				flags, payload, err := readEnvelope(r.Body)
				if err == io.EOF {
					return false, nil
				}
				if err != nil {
					return false, err
				}
				if flags&flagCompressed != 0 {
					return false, Errorf(Unimplemented, "compressed messages are not supported")
				}
				return true, decode(payload, m)
			}
			resp, err = fn(ctx, r, next)
		}
		if err == nil {
			if err = s.Send(resp); err == nil {
				_ = s.write(FlagEndStream, []byte("{}"))
				return
			}
		}
		end, _ := json.Marshal(struct {
			Error *Error `json:"error"`
		}{asError(err)})
		_ = s.write(FlagEndStream, end)
	})
}
