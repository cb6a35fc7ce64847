// Package jupyter drives Jupyter kernels over the Jupyter messaging
// protocol (v5.3): it starts a kernel from a kernelspec, connects its five
// ZeroMQ channels, and routes iopub traffic to the request that caused it
// by parent_header.msg_id.
package jupyter

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"
)

// ProtocolVersion is the messaging protocol version we speak.
const ProtocolVersion = "5.3"

// delimiter separates ZMQ routing identities from the signed message.
var delimiter = []byte("<IDS|MSG>")

// Header is a Jupyter message header.
type Header struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// Message is one decoded Jupyter message. Content stays raw JSON so each
// consumer decodes only the fields it needs, once.
type Message struct {
	Identities   [][]byte
	Header       Header
	ParentHeader Header
	Metadata     json.RawMessage
	Content      json.RawMessage
	Buffers      [][]byte
}

// Signer computes and checks HMAC signatures. A nil key disables signing,
// as the protocol allows (empty signature).
type Signer struct {
	mu  sync.Mutex
	mac hash.Hash
}

// NewSigner returns a signer for scheme "hmac-sha256" (the only scheme
// ipykernel and every mainstream kernel use).
func NewSigner(scheme string, key []byte) (*Signer, error) {
	if len(key) == 0 {
		return &Signer{}, nil
	}
	if scheme != "hmac-sha256" {
		return nil, fmt.Errorf("signature scheme %q is not supported; use hmac-sha256", scheme)
	}
	return &Signer{mac: hmac.New(sha256.New, key)}, nil
}

// Sign returns the hex signature over the four JSON parts.
func (s *Signer) Sign(parts ...[]byte) []byte {
	if s.mac == nil {
		return []byte{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mac.Reset()
	for _, p := range parts {
		s.mac.Write(p)
	}
	sum := s.mac.Sum(nil)
	out := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(out, sum)
	return out
}

// ErrBadSignature is returned for a message whose HMAC does not verify.
var ErrBadSignature = errors.New("jupyter: invalid message signature")

// Verify checks sig against the parts in constant time.
func (s *Signer) Verify(sig []byte, parts ...[]byte) bool {
	if s.mac == nil {
		return true
	}
	return hmac.Equal(sig, s.Sign(parts...))
}

// Encode serializes m into ZMQ frames: identities, delimiter, signature,
// header, parent header, metadata, content, buffers.
func (s *Signer) Encode(m *Message) ([][]byte, error) {
	header, err := json.Marshal(m.Header)
	if err != nil {
		return nil, err
	}
	parent := []byte("{}")
	if m.ParentHeader.MsgID != "" {
		if parent, err = json.Marshal(m.ParentHeader); err != nil {
			return nil, err
		}
	}
	meta := []byte(m.Metadata)
	if len(meta) == 0 {
		meta = []byte("{}")
	}
	content := []byte(m.Content)
	if len(content) == 0 {
		content = []byte("{}")
	}
	frames := make([][]byte, 0, len(m.Identities)+6+len(m.Buffers))
	frames = append(frames, m.Identities...)
	frames = append(frames, delimiter, s.Sign(header, parent, meta, content), header, parent, meta, content)
	frames = append(frames, m.Buffers...)
	return frames, nil
}

// Decode parses and verifies the frames of one message.
func (s *Signer) Decode(frames [][]byte) (*Message, error) {
	i := 0
	for i < len(frames) && !bytes.Equal(frames[i], delimiter) {
		i++
	}
	if i == len(frames) {
		return nil, errors.New("jupyter: message without <IDS|MSG> delimiter")
	}
	if len(frames)-i < 6 {
		return nil, fmt.Errorf("jupyter: message has %d parts after the delimiter, want at least 5", len(frames)-i-1)
	}
	sig, header, parent, meta, content := frames[i+1], frames[i+2], frames[i+3], frames[i+4], frames[i+5]
	if !s.Verify(sig, header, parent, meta, content) {
		return nil, ErrBadSignature
	}
	m := &Message{Identities: frames[:i], Metadata: meta, Content: content, Buffers: frames[i+6:]}
	if err := json.Unmarshal(header, &m.Header); err != nil {
		return nil, fmt.Errorf("jupyter: decode header: %w", err)
	}
	if len(parent) > 2 {
		if err := json.Unmarshal(parent, &m.ParentHeader); err != nil {
			return nil, fmt.Errorf("jupyter: decode parent header: %w", err)
		}
	}
	return m, nil
}

// newID returns a random UUID-shaped identifier.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newMessage builds a request with a fresh msg_id.
func newMessage(session, msgType string, content any) (*Message, error) {
	c, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	return &Message{
		Header: Header{
			MsgID:    newID(),
			Session:  session,
			Username: "sbx",
			Date:     time.Now().UTC().Format(time.RFC3339Nano),
			MsgType:  msgType,
			Version:  ProtocolVersion,
		},
		Content: c,
	}, nil
}
