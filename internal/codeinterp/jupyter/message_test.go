package jupyter

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// golden is a message serialized by jupyter_client's Session (the
// reference implementation), stored in testdata.
type golden struct {
	Key    string   `json:"key"`
	Frames []string `json:"frames"`
}

func loadGolden(t *testing.T, name string) ([]byte, [][]byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	frames := make([][]byte, len(g.Frames))
	for i, f := range g.Frames {
		frames[i] = []byte(f)
	}
	return []byte(g.Key), frames
}

func TestDecodeGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file       string
		msgType    string
		parentID   string
		identities int
	}{
		{"execute_request.json", "execute_request", "", 1},
		{"stream_reply.json", "stream", "m-1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			key, frames := loadGolden(t, tt.file)
			s, err := NewSigner("hmac-sha256", key)
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.Decode(frames)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if m.Header.MsgType != tt.msgType || m.ParentHeader.MsgID != tt.parentID || len(m.Identities) != tt.identities {
				t.Fatalf("got type %q parent %q idents %d", m.Header.MsgType, m.ParentHeader.MsgID, len(m.Identities))
			}
			// Re-encoding the same JSON bytes must reproduce the reference signature.
			if got := s.Sign(frames[3], frames[4], frames[5], frames[6]); string(got) != string(frames[2]) {
				t.Fatalf("signature %s, reference %s", got, frames[2])
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	key, frames := loadGolden(t, "stream_reply.json")
	s, _ := NewSigner("hmac-sha256", key)
	wrongKey, _ := NewSigner("hmac-sha256", []byte("another key"))
	clone := func(mut func([][]byte) [][]byte) [][]byte {
		c := make([][]byte, len(frames))
		for i := range frames {
			c[i] = append([]byte(nil), frames[i]...)
		}
		return mut(c)
	}
	tests := []struct {
		name   string
		signer *Signer
		frames [][]byte
		sigErr bool
	}{
		{"tampered content", s, clone(func(f [][]byte) [][]byte { f[6] = []byte(`{"name":"stdout","text":"evil"}`); return f }), true},
		{"tampered parent", s, clone(func(f [][]byte) [][]byte { f[4] = []byte(`{}`); return f }), true},
		{"wrong key", wrongKey, clone(func(f [][]byte) [][]byte { return f }), true},
		{"no delimiter", s, clone(func(f [][]byte) [][]byte { f[1] = []byte("nope"); return f }), false},
		{"truncated", s, clone(func(f [][]byte) [][]byte { return f[:5] }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.signer.Decode(tt.frames)
			if err == nil {
				t.Fatal("Decode accepted a bad message")
			}
			if tt.sigErr != errors.Is(err, ErrBadSignature) {
				t.Fatalf("err = %v, want signature error %v", err, tt.sigErr)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := NewSigner("hmac-sha256", []byte("k"))
	m, err := newMessage("sess", "execute_request", ExecuteRequest{Code: "print('é')"})
	if err != nil {
		t.Fatal(err)
	}
	m.ParentHeader = Header{MsgID: "parent-1", MsgType: "x"}
	m.Buffers = [][]byte{{0, 1, 2}}
	frames, err := s.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Decode(frames)
	if err != nil {
		t.Fatal(err)
	}
	var req ExecuteRequest
	if err := json.Unmarshal(got.Content, &req); err != nil || req.Code != "print('é')" {
		t.Fatalf("content %s, err %v", got.Content, err)
	}
	if got.Header.MsgID != m.Header.MsgID || got.ParentHeader.MsgID != "parent-1" || len(got.Buffers) != 1 {
		t.Fatalf("round trip lost data: %+v", got)
	}
	if _, err := NewSigner("hmac-md5", []byte("k")); err == nil {
		t.Fatal("unsupported scheme accepted")
	}
}

// TestIOPubRouting feeds iopub frames through a real ZMTP connection into
// the kernel's reader and checks each request gets exactly its children.
func TestIOPubRouting(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer server.Close()
	signer, _ := NewSigner("hmac-sha256", []byte("key"))
	k := &Kernel{signer: signer, pending: map[string]*call{}, log: slog.New(slog.DiscardHandler), dead: make(chan struct{})}
	a := &call{msgID: "req-a", reply: make(chan *Message, 1), notify: make(chan struct{}, 1)}
	b := &call{msgID: "req-b", reply: make(chan *Message, 1), notify: make(chan struct{}, 1)}
	k.pending["req-a"], k.pending["req-b"] = a, b
	go k.readLoop(&zmtpConn{c: client, r: newReader(client)}, "iopub")

	peer := &zmtpConn{c: server, r: newReader(server)}
	send := func(parent, text string) {
		m, _ := newMessage("kern", "stream", map[string]string{"name": "stdout", "text": text})
		m.ParentHeader = Header{MsgID: parent}
		m.Identities = [][]byte{[]byte("stream.stdout")}
		f, _ := signer.Encode(m)
		if err := peer.Send(f); err != nil {
			t.Error(err)
		}
	}
	send("req-a", "a1")
	send("req-b", "b1")
	send("unknown", "lost")
	send("req-a", "a2")
	// A forged message must never reach a caller.
	forged, _ := newMessage("kern", "stream", map[string]string{"text": "forged"})
	forged.ParentHeader = Header{MsgID: "req-a"}
	ff, _ := (&Signer{}).Encode(forged)
	_ = peer.Send(ff)
	send("req-b", "b2")

	want := map[*call][]string{a: {"a1", "a2"}, b: {"b1", "b2"}}
	for c, texts := range want {
		var got []string
		deadline := time.After(5 * time.Second)
		for len(got) < len(texts) {
			select {
			case <-c.notify:
				for _, m := range c.drain() {
					var s struct{ Text string }
					_ = json.Unmarshal(m.Content, &s)
					got = append(got, s.Text)
				}
			case <-deadline:
				t.Fatalf("%s: got %v, want %v", c.msgID, got, texts)
			}
		}
		if len(got) != len(texts) || got[0] != texts[0] || got[1] != texts[1] {
			t.Fatalf("%s: got %v, want %v", c.msgID, got, texts)
		}
	}
}
