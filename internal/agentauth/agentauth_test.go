package agentauth

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func mustKey(t *testing.T) Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Every input of a proof matters, and the two kinds of proof never stand
// for each other.
func TestProofsBindEveryField(t *testing.T) {
	t.Parallel()
	k, other := mustKey(t), mustKey(t)
	nonce := bytes.Repeat([]byte{1}, NonceSize)
	base := InitProof(k, "sbxa", nonce, []byte("{}"), nil)
	variants := map[string][]byte{
		"other key":   InitProof(other, "sbxa", nonce, []byte("{}"), nil),
		"other id":    InitProof(k, "sbxb", nonce, []byte("{}"), nil),
		"other nonce": InitProof(k, "sbxa", bytes.Repeat([]byte{2}, NonceSize), []byte("{}"), nil),
		"other body":  InitProof(k, "sbxa", nonce, []byte("{ }"), nil),
		"with rekey":  InitProof(k, "sbxa", nonce, []byte("{}"), make([]byte, KeySize)),
		"reply":       ReplyProof(k, "sbxa", nonce),
		// Length prefixes: moving bytes between fields changes the proof.
		"shifted": InitProof(k, "sbx", append([]byte("a"), nonce[:NonceSize-1]...), []byte("{}"), nil),
	}
	for name, p := range variants {
		if bytes.Equal(p, base) {
			t.Errorf("%s: same proof as the base", name)
		}
	}
	if err := Verify(hex.EncodeToString(base), InitProof(k, "sbxa", nonce, []byte("{}"), nil)); err != nil {
		t.Errorf("a genuine proof does not verify: %v", err)
	}
	for _, bad := range []string{"", "zz", hex.EncodeToString(base[:31]), hex.EncodeToString(variants["reply"])} {
		if Verify(bad, base) == nil {
			t.Errorf("proof %q verifies", bad)
		}
	}
}

func TestWrapUnwrap(t *testing.T) {
	t.Parallel()
	k, next := mustKey(t), mustKey(t)
	nonce := bytes.Repeat([]byte{7}, NonceSize)
	w := Wrap(k, "sbxclone", nonce, next)
	if bytes.Equal(w, next[:]) {
		t.Fatal("the wrapped key is the key")
	}
	got, err := Unwrap(k, "sbxclone", nonce, w)
	if err != nil || got != next {
		t.Fatalf("Unwrap = %v, %v", got.Hex() == next.Hex(), err)
	}
	if got, _ := Unwrap(mustKey(t), "sbxclone", nonce, w); got == next {
		t.Error("another key unwraps it")
	}
	if got, _ := Unwrap(k, "sbxother", nonce, w); got == next {
		t.Error("it unwraps for another clone ID")
	}
	if _, err := Unwrap(k, "sbxclone", nonce, w[:5]); err == nil {
		t.Error("a short wrapped key is accepted")
	}
}

func TestKeyEncodingAndRedaction(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	back, err := ParseKey(k.Hex())
	if err != nil || back != k {
		t.Fatalf("ParseKey(Hex()) = %v", err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 2*KeySize), k.Hex() + "00"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %s", k, k), buf.String()} {
		if strings.Contains(s, k.Hex()) || strings.Contains(s, k.Hex()[:16]) {
			t.Errorf("the key prints itself: %s", s)
		}
	}
	if (Key{}).IsZero() != true || k.IsZero() {
		t.Error("IsZero")
	}
}
