package sdk

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// golden bytes of the envd exchange for `commands.run("echo hi")` from the
// protocol reference (§3.2), written out by hand so the framing code is
// checked against an independent source, not against itself.
var (
	goldenStartRequest = mustHex(
		"00" + "0000004a" + // flags, length 74
			hex.EncodeToString([]byte(`{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},"stdin":false}`)))
	goldenStartResponse = mustHex(
		"00" + "0000001f" + hex.EncodeToString([]byte(`{"event":{"start":{"pid":412}}}`)) +
			"00" + "00000024" + hex.EncodeToString([]byte(`{"event":{"data":{"stdout":"aGkK"}}}`)) +
			"00" + "0000003a" + hex.EncodeToString([]byte(`{"event":{"end":{"exited":true,"status":"exit status 0"}}}`)) +
			"02" + "00000002" + "7b7d")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestEncodeEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flags byte
		msg   string
		want  string // hex
	}{
		{"empty message", 0, "", "0000000000"},
		{"small message", 0, `{}`, "00000000027b7d"},
		{"end of stream", envelopeEndStream, `{}`, "02000000027b7d"},
		{"length is big endian", 0, strings.Repeat("a", 258), "0000000102" + strings.Repeat("61", 258)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := hex.EncodeToString(encodeEnvelope(tt.flags, []byte(tt.msg)))
			if got != tt.want {
				t.Errorf("encodeEnvelope = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestGoldenStartResponse(t *testing.T) {
	t.Parallel()
	st := &serverStream{procedure: "test", body: io.NopCloser(nil), r: bufioReader(goldenStartResponse), max: DefaultMaxMessageBytes}
	var msgs []string
	for {
		msg, err := st.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		msgs = append(msgs, string(msg))
	}
	want := []string{
		`{"event":{"start":{"pid":412}}}`,
		`{"event":{"data":{"stdout":"aGkK"}}}`,
		`{"event":{"end":{"exited":true,"status":"exit status 0"}}}`,
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	if _, err := st.next(); !errors.Is(err, io.EOF) {
		t.Errorf("next after end = %v, want io.EOF", err)
	}
}

func TestStreamErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stream  []byte
		max     int
		check   func(error) bool
		wantMsg string
	}{
		{
			name:   "end of stream with a connect error",
			stream: encodeEnvelope(envelopeEndStream, []byte(`{"error":{"code":"not_found","message":"process with pid 7 not found"}}`)),
			check:  IsNotFound,
		},
		{
			name:   "connection closed without end of stream",
			stream: encodeEnvelope(0, []byte(`{"event":{"keepalive":{}}}`)),
			check:  func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name:   "truncated envelope",
			stream: encodeEnvelope(0, []byte(`{"event":{}}`))[:8],
			check:  func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name:    "compressed envelope",
			stream:  encodeEnvelope(envelopeCompressed, []byte(`xx`)),
			wantMsg: "compressed envelope",
		},
		{
			name:    "oversized envelope",
			stream:  mustHex("00ffffffff"),
			check:   func(err error) bool { return errors.Is(err, ErrMessageTooLarge) },
			wantMsg: "announces 4294967295 bytes",
		},
		{
			name:   "envelope over a client's own limit",
			stream: encodeEnvelope(0, []byte(`{"event":{"data":{"stdout":"aGkK"}}}`)),
			max:    16,
			check:  func(err error) bool { return errors.Is(err, ErrMessageTooLarge) },
		},
		{
			name:   "envelope at the limit",
			stream: encodeEnvelope(envelopeEndStream, []byte(`{"error":{"code":"not_found"}}`)),
			max:    len(`{"error":{"code":"not_found"}}`),
			check:  IsNotFound,
		},
		{
			name:    "malformed end of stream",
			stream:  encodeEnvelope(envelopeEndStream, []byte(`not json`)),
			wantMsg: "invalid connect end-of-stream",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			max := tt.max
			if max == 0 {
				max = DefaultMaxMessageBytes
			}
			st := &serverStream{procedure: "test", body: io.NopCloser(nil), r: bufioReader(tt.stream), max: max}
			var err error
			for err == nil {
				_, err = st.next()
			}
			if errors.Is(err, io.EOF) {
				t.Fatalf("stream ended cleanly, want an error")
			}
			if tt.check != nil && !tt.check(err) {
				t.Errorf("error %v (%T) did not pass the check", err, err)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func bufioReader(b []byte) io.Reader { return bytes.NewReader(b) }

// The announced length is checked before anything is allocated: a 4 GiB
// announcement costs nothing but the error.
func TestReadEnvelopeAllocatesNothingForAnOversizedFrame(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, _, err := readEnvelope(bytes.NewReader(mustHex("00ffffffff")), DefaultMaxMessageBytes); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("readEnvelope = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("ten oversized frames allocated %d bytes", grew)
	}
}

func TestReadLimited(t *testing.T) {
	t.Parallel()
	if b, err := readLimited(strings.NewReader("12345"), 5); err != nil || string(b) != "12345" {
		t.Errorf("at the limit: %q %v", b, err)
	}
	if _, err := readLimited(strings.NewReader("123456"), 5); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
}

func TestKeepTail(t *testing.T) {
	t.Parallel()
	var buf []byte
	for _, chunk := range []string{"abc", "defg", "h"} {
		buf = keep(buf, []byte(chunk), 4)
	}
	if string(buf) != "efgh" {
		t.Errorf("tail = %q, want efgh", buf)
	}
	if got := keep(nil, []byte("all of it"), 0); string(got) != "all of it" {
		t.Errorf("no limit: %q", got)
	}
}
