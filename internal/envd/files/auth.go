// Package files serves envd's plain-HTTP /files endpoint: downloads and
// uploads authorised by the access token or by a signed URL.
package files

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Operations a signature can grant.
const (
	OpRead  = "read"
	OpWrite = "write"
)

// Sign computes E2B's file URL signature:
// "v1_" + base64.RawStdEncoding(sha256(path:operation:user:token[:expiration])).
// expiration is unix seconds; 0 means the signature never expires.
func Sign(path, operation, user, token string, expiration int64) string {
	raw := path + ":" + operation + ":" + user + ":" + token
	if expiration != 0 {
		raw += ":" + strconv.FormatInt(expiration, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// authorize checks a /files request against the access token: the
// X-Access-Token header when present, else the signature query parameters.
func authorize(r *http.Request, token, operation string, now time.Time) *httpError {
	if token == "" {
		return nil
	}
	if h := r.Header.Get("X-Access-Token"); h != "" {
		if subtle.ConstantTimeCompare([]byte(h), []byte(token)) != 1 {
			return &httpError{http.StatusUnauthorized, "the X-Access-Token header does not match the sandbox's access token"}
		}
		return nil
	}
	q := r.URL.Query()
	// A hand-built URL may leave the base64 '+' unescaped; it arrives as ' '.
	sig := strings.ReplaceAll(q.Get("signature"), " ", "+")
	if sig == "" {
		return &httpError{http.StatusUnauthorized, "unauthorized access, please provide a valid access token or method signing if supported"}
	}
	var exp int64
	if s := q.Get("signature_expiration"); s != "" {
		var err error
		if exp, err = strconv.ParseInt(s, 10, 64); err != nil {
			return &httpError{http.StatusBadRequest, "signature_expiration must be unix seconds"}
		}
		if now.Unix() > exp {
			return &httpError{http.StatusUnauthorized, "signature is already expired"}
		}
	}
	want := Sign(q.Get("path"), operation, q.Get("username"), token, exp)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return &httpError{http.StatusUnauthorized, "invalid signature"}
	}
	return nil
}
