package jupyter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// This file is a minimal ZMTP 3.0 client (RFC 23/ZMTP): NULL security, the
// client side of a TCP connection, and the three socket types a Jupyter
// client needs (DEALER for shell/control/stdin, SUB for iopub, REQ for
// heartbeat). A kernel binds, we connect, exactly one peer per socket, so
// none of libzmq's routing, queueing or reconnection machinery is needed;
// owning the wire format keeps the dependency list empty and lets a kernel
// restart simply close and redial.

const (
	flagMore    = 0x01
	flagLong    = 0x02
	flagCommand = 0x04

	// maxFrame bounds a single frame so a corrupt length cannot make us
	// allocate gigabytes; large matplotlib PNGs are a few MB.
	maxFrame = 512 << 20
)

// zmtpConn is one connected ZMTP socket. Send is safe for concurrent use;
// Recv must be called from one goroutine at a time.
type zmtpConn struct {
	c      net.Conn
	r      *bufio.Reader
	sendMu sync.Mutex
	wbuf   []byte
	typ    string
}

// dialZMTP connects to addr and performs the greeting and READY handshake
// announcing socketType (e.g. "DEALER") and, if non-empty, identity.
func dialZMTP(ctx context.Context, addr, socketType string, identity []byte) (*zmtpConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	z := &zmtpConn{c: c, r: newReader(c), typ: socketType}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := z.handshake(socketType, identity); err != nil {
		c.Close()
		return nil, fmt.Errorf("zmtp handshake with %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return z, nil
}

func greeting() []byte {
	g := make([]byte, 64)
	g[0] = 0xff
	g[9] = 0x7f
	g[10] = 3 // version major
	g[11] = 0 // version minor: 3.0, so SUB may subscribe with a 0x01 message
	copy(g[12:32], "NULL")
	return g
}

func (z *zmtpConn) handshake(socketType string, identity []byte) error {
	if _, err := z.c.Write(greeting()); err != nil {
		return err
	}
	peer := make([]byte, 64)
	if _, err := io.ReadFull(z.r, peer); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if peer[0] != 0xff || peer[9] != 0x7f {
		return errors.New("peer is not speaking ZMTP")
	}
	if peer[10] < 3 {
		return fmt.Errorf("peer speaks ZMTP %d.%d, need 3.x", peer[10], peer[11])
	}
	if mech := string(bytes.TrimRight(peer[12:32], "\x00")); mech != "NULL" {
		return fmt.Errorf("peer wants security mechanism %q; only NULL is supported", mech)
	}
	props := map[string][]byte{"Socket-Type": []byte(socketType)}
	if len(identity) > 0 {
		props["Identity"] = identity
	}
	if err := z.writeFrame(flagCommand, readyBody(props)); err != nil {
		return err
	}
	for {
		flags, body, err := z.readFrame()
		if err != nil {
			return fmt.Errorf("read READY: %w", err)
		}
		if flags&flagCommand == 0 {
			return errors.New("peer sent a message before READY")
		}
		name, _ := commandName(body)
		switch name {
		case "READY":
			return nil
		case "ERROR":
			return fmt.Errorf("peer refused: %q", body)
		}
		// Other commands (PING…) before READY are ignored.
	}
}

// readyBody encodes a READY command with the given metadata properties.
func readyBody(props map[string][]byte) []byte {
	var b bytes.Buffer
	b.WriteByte(5)
	b.WriteString("READY")
	// Fixed order keeps the bytes deterministic for tests.
	for _, k := range []string{"Socket-Type", "Identity"} {
		v, ok := props[k]
		if !ok {
			continue
		}
		b.WriteByte(byte(len(k)))
		b.WriteString(k)
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(v)))
		b.Write(n[:])
		b.Write(v)
	}
	return b.Bytes()
}

func commandName(body []byte) (string, []byte) {
	if len(body) == 0 || int(body[0]) > len(body)-1 {
		return "", nil
	}
	n := int(body[0])
	return string(body[1 : 1+n]), body[1+n:]
}

func (z *zmtpConn) writeFrame(flags byte, body []byte) error {
	z.sendMu.Lock()
	defer z.sendMu.Unlock()
	z.wbuf = appendFrame(z.wbuf[:0], flags, body)
	_, err := z.c.Write(z.wbuf)
	return err
}

func appendFrame(dst []byte, flags byte, body []byte) []byte {
	if len(body) > 255 {
		dst = append(dst, flags|flagLong)
		dst = binary.BigEndian.AppendUint64(dst, uint64(len(body)))
	} else {
		dst = append(dst, flags, byte(len(body)))
	}
	return append(dst, body...)
}

// Send writes one multipart message in a single write, so concurrent
// senders never interleave frames.
func (z *zmtpConn) Send(frames [][]byte) error {
	if len(frames) == 0 {
		return errors.New("zmtp: empty message")
	}
	z.sendMu.Lock()
	defer z.sendMu.Unlock()
	buf := z.wbuf[:0]
	for i, f := range frames {
		var flags byte
		if i < len(frames)-1 {
			flags = flagMore
		}
		buf = appendFrame(buf, flags, f)
	}
	z.wbuf = buf
	_, err := z.c.Write(buf)
	if cap(z.wbuf) > 1<<20 {
		z.wbuf = nil // do not pin a big image buffer forever
	}
	return err
}

func (z *zmtpConn) readFrame() (byte, []byte, error) {
	flags, err := z.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	var size uint64
	if flags&flagLong != 0 {
		var n [8]byte
		if _, err := io.ReadFull(z.r, n[:]); err != nil {
			return 0, nil, err
		}
		size = binary.BigEndian.Uint64(n[:])
	} else {
		b, err := z.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		size = uint64(b)
	}
	if size > maxFrame {
		return 0, nil, fmt.Errorf("zmtp: frame of %d bytes exceeds limit", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(z.r, body); err != nil {
		return 0, nil, err
	}
	return flags, body, nil
}

// Recv returns the next multipart message, answering PING commands and
// skipping other commands.
func (z *zmtpConn) Recv() ([][]byte, error) {
	var frames [][]byte
	for {
		flags, body, err := z.readFrame()
		if err != nil {
			return nil, err
		}
		if flags&flagCommand != 0 {
			if name, rest := commandName(body); name == "PING" {
				// PONG echoes the ping context (after the 2-byte TTL).
				ctxb := []byte{}
				if len(rest) >= 2 {
					ctxb = rest[2:]
				}
				pong := append([]byte{4}, "PONG"...)
				if err := z.writeFrame(flagCommand, append(pong, ctxb...)); err != nil {
					return nil, err
				}
			}
			continue
		}
		frames = append(frames, body)
		if flags&flagMore == 0 {
			return frames, nil
		}
	}
}

// Subscribe sends a ZMTP 3.0 style subscription (a message whose first
// byte is 1). An empty prefix subscribes to everything.
func (z *zmtpConn) Subscribe(prefix []byte) error {
	return z.Send([][]byte{append([]byte{1}, prefix...)})
}

func (z *zmtpConn) Close() error { return z.c.Close() }

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 64<<10) }
