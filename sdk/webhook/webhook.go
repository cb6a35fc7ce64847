// Package webhook signs and verifies sbx webhook deliveries.
//
// Every delivery carries two signatures over the same raw body, so receivers
// can use whichever they already support:
//
//   - E2B's scheme (header e2b-signature, e2b-signature-version: v1):
//     base64url-without-padding of SHA-256(secret ‖ body). It is a plain hash,
//     not an HMAC, and has no timestamp; it exists for compatibility with
//     receivers written for E2B's cloud. Check it with VerifyE2B.
//   - Standard Webhooks (headers webhook-id, webhook-timestamp,
//     webhook-signature): "v1," + base64(HMAC-SHA256(key, id.timestamp.body)),
//     where key is the secret's UTF-8 bytes or, for a secret "whsec_<base64>",
//     the decoded bytes. The timestamp bounds replays. Check it with
//     VerifyStandard; prefer it for new receivers.
//
// This package imports nothing from sbx's internal packages: the server uses
// the same functions to sign, so there is one implementation of each scheme.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names set on every delivery.
const (
	HeaderE2BWebhookID        = "e2b-webhook-id"        // the webhook registration
	HeaderE2BDeliveryID       = "e2b-delivery-id"       // unique per attempt
	HeaderE2BSignatureVersion = "e2b-signature-version" // always "v1"
	HeaderE2BSignature        = "e2b-signature"

	HeaderID        = "webhook-id"        // the message, stable across retries
	HeaderTimestamp = "webhook-timestamp" // unix seconds of this attempt
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64>" list

	// HeaderEventSeq is the event's position in the server's event log (a
	// decimal integer, increasing with the order events were recorded;
	// absent on test pings). A sandbox's events reach a webhook in this
	// order, one at a time (the next after the previous one is delivered
	// or failed for good); different sandboxes' deliveries run
	// concurrently and arrive in any order. A redelivery a user asks for
	// comes outside that order, and after a crash an event may come again
	// (dedupe on webhook-id); a receiver that must never apply an older
	// event keeps, per sandbox, the highest sequence it has applied. It is
	// not covered by the signatures; the body's timestamp is, at a clock's
	// precision.
	HeaderEventSeq = "sbx-event-seq"
)

// DefaultTolerance is how far webhook-timestamp may be from now when
// VerifyStandard is called with a zero tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors returned by the verifiers; test with errors.Is.
var (
	ErrMissingHeader     = errors.New("webhook: missing header")
	ErrInvalidSignature  = errors.New("webhook: signature does not match")
	ErrTimestampTooOld   = errors.New("webhook: timestamp outside tolerance")
	ErrInvalidSecret     = errors.New("webhook: invalid secret")
	ErrInvalidHeaderData = errors.New("webhook: malformed header")
)

// SignE2B returns E2B's v1 signature of body.
func SignE2B(secret string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(secret))
	h.Write(body)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// VerifyE2B checks an e2b-signature header value against body.
func VerifyE2B(secret string, body []byte, signature string) error {
	if secret == "" {
		return fmt.Errorf("%w: empty secret", ErrInvalidSecret)
	}
	if signature == "" {
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderE2BSignature)
	}
	want := SignE2B(secret, body)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.TrimSpace(signature))) != 1 {
		return ErrInvalidSignature
	}
	return nil
}

// StandardKey returns the HMAC key Standard Webhooks derives from secret:
// the base64-decoded part of a "whsec_" secret, else the secret's bytes.
func StandardKey(secret string) ([]byte, error) {
	if secret == "" {
		return nil, fmt.Errorf("%w: empty secret", ErrInvalidSecret)
	}
	rest, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: a whsec_ secret must be followed by standard base64: %v", ErrInvalidSecret, err)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: whsec_ secret decodes to no bytes", ErrInvalidSecret)
	}
	return key, nil
}

// SignStandard returns the Standard Webhooks signature header value
// ("v1,<base64>") for message id msgID sent at ts.
func SignStandard(secret, msgID string, ts time.Time, body []byte) (string, error) {
	key, err := StandardKey(secret)
	if err != nil {
		return "", err
	}
	return signStandardKey(key, msgID, ts.Unix(), body), nil
}

func signStandardKey(key []byte, msgID string, unix int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msgID))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(unix, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// VerifyStandard checks the Standard Webhooks headers against body, with
// webhook-timestamp allowed to be at most tolerance away from now (zero
// means DefaultTolerance).
func VerifyStandard(secret string, headers http.Header, body []byte, tolerance time.Duration) error {
	return VerifyStandardAt(secret, headers, body, tolerance, time.Now())
}

// VerifyStandardAt is VerifyStandard with an explicit current time.
func VerifyStandardAt(secret string, headers http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := StandardKey(secret)
	if err != nil {
		return err
	}
	id, tsRaw, sigs := headers.Get(HeaderID), headers.Get(HeaderTimestamp), headers.Get(HeaderSignature)
	for name, v := range map[string]string{HeaderID: id, HeaderTimestamp: tsRaw, HeaderSignature: sigs} {
		if v == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, name)
		}
	}
	unix, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not unix seconds", ErrInvalidHeaderData, HeaderTimestamp, tsRaw)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s is %s away from now (tolerance %s)", ErrTimestampTooOld, HeaderTimestamp, d.Round(time.Second), tolerance)
	}
	want := signStandardKey(key, id, unix, body)
	// Several signatures may be sent during a secret rotation; any v1 match wins.
	for _, s := range strings.Fields(sigs) {
		if subtle.ConstantTimeCompare([]byte(s), []byte(want)) == 1 {
			return nil
		}
	}
	return ErrInvalidSignature
}
