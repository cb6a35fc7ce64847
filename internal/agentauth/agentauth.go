// Package agentauth is how the host and a sandbox's agent (envd) prove to
// each other who they are. The host makes a random key for every sandbox
// when it creates the container and gives it only to the sandbox's init
// process; envd keeps it where the sandbox's own processes cannot read it.
// Every POST /init the host sends carries a proof over the sandbox ID, a
// host-chosen nonce and the body, which only a key holder can make; envd
// answers with a proof of its own over the ID and the nonce, which the
// host checks before it trusts the answer. So neither a process in the
// sandbox (which can reach envd's socket) can re-initialise envd, nor can
// a socket planted in the sandbox's run dir pass for envd.
//
// Sandboxes restored from a template snapshot share the snapshot sandbox's
// memory, key included: the first /init after a restore, proven with that
// key, hands the clone a key of its own (wrapped, so only a holder of the
// old key can read it).
//
// Proofs are HMAC-SHA256 over a domain-separation string and
// length-prefixed fields, so a proof made for one purpose or one sandbox
// is worthless for another.
package agentauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
)

// KeySize is the size of an agent key in bytes.
const KeySize = 32

// NonceSize is the size of the host's nonce in bytes.
const NonceSize = 16

// EnvVar carries the key, hex-encoded, in the environment of the
// sandbox's init process (and nowhere else).
const EnvVar = "SBX_AGENT_KEY"

// Headers of POST /init and of its answer.
const (
	HeaderID    = "X-Sbx-Agent-Id"    // the sandbox ID the host addresses
	HeaderNonce = "X-Sbx-Agent-Nonce" // hex, NonceSize bytes, chosen by the host
	HeaderProof = "X-Sbx-Agent-Proof" // hex HMAC: InitProof on the request, ReplyProof on the answer
	// HeaderRekey, on a request, is the clone's new key wrapped with the
	// key that proves the request (hex, KeySize bytes): see Wrap.
	HeaderRekey = "X-Sbx-Agent-Rekey"
)

// Domain-separation strings: each proof says what it is for.
const (
	domainInit  = "sbx agent init request v1"
	domainReply = "sbx agent init reply v1"
	domainRekey = "sbx agent rekey v1"
)

// ErrBadProof is returned when a proof does not verify.
var ErrBadProof = errors.New("agent proof does not verify")

// Key is a sandbox's agent key. It never prints itself: String and
// LogValue redact it; Hex is for handing it to the init process.
type Key [KeySize]byte

// NewKey returns a random key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate agent key: %w", err)
	}
	return k, nil
}

// ParseKey decodes a hex key (as Hex writes it).
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return k, fmt.Errorf("agent key must be %d hex-encoded bytes", KeySize)
	}
	copy(k[:], b)
	return k, nil
}

// Hex encodes the key for the init process's environment or a key file.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k Key) IsZero() bool { return k == Key{} }

// String redacts the key.
func (k Key) String() string { return "[agent key]" }

// LogValue redacts the key in logs.
func (k Key) LogValue() slog.Value { return slog.StringValue("[agent key]") }

// NewNonce returns a random nonce for one /init.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("generate agent nonce: %w", err)
	}
	return n, nil
}

// mac starts an HMAC for one purpose and writes the fields, each prefixed
// with its length so that no two field lists give the same input.
func mac(k Key, domain string, fields ...[]byte) hash.Hash {
	h := hmac.New(sha256.New, k[:])
	h.Write([]byte(domain))
	for _, f := range fields {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h
}

// InitProof is the host's proof on POST /init: it binds the sandbox ID,
// the nonce, the body and the rekey header (empty when none) to the key.
func InitProof(k Key, id string, nonce, body, rekey []byte) []byte {
	sum := sha256.Sum256(body)
	return mac(k, domainInit, []byte(id), nonce, sum[:], rekey).Sum(nil)
}

// ReplyProof is envd's proof on its answer to POST /init.
func ReplyProof(k Key, id string, nonce []byte) []byte {
	return mac(k, domainReply, []byte(id), nonce).Sum(nil)
}

// Verify checks a hex proof against the expected one in constant time.
func Verify(proofHex string, want []byte) error {
	got, err := hex.DecodeString(proofHex)
	if err != nil || !hmac.Equal(got, want) {
		return ErrBadProof
	}
	return nil
}

// Wrap encrypts a clone's new key for the holder of the key that proves
// the request: a one-time pad drawn from that key, the clone's ID and the
// request's nonce (fresh for every request, so no pad is used twice).
func Wrap(k Key, id string, nonce []byte, next Key) []byte {
	pad := mac(k, domainRekey, []byte(id), nonce).Sum(nil)
	out := make([]byte, KeySize)
	for i := range out {
		out[i] = next[i] ^ pad[i]
	}
	return out
}

// Unwrap is the inverse of Wrap.
func Unwrap(k Key, id string, nonce, wrapped []byte) (Key, error) {
	var next Key
	if len(wrapped) != KeySize {
		return next, fmt.Errorf("wrapped agent key must be %d bytes, got %d", KeySize, len(wrapped))
	}
	pad := mac(k, domainRekey, []byte(id), nonce).Sum(nil)
	for i := range next {
		next[i] = wrapped[i] ^ pad[i]
	}
	return next, nil
}
