package webhook

import (
	"slices"

	"github.com/sbxdev/sbx/internal/store"
)

// Delivery states.
const (
	statePending = store.DeliveryPending
	stateSuccess = store.DeliverySuccess
	stateFailed  = store.DeliveryFailed
)

// Error classes of the attempt log (protocol doc §1.7 WebhookDelivery.errorClass).
const (
	classHTTP      = "http_error"
	classDNS       = "dns_error"
	classTimeout   = "timeout"
	classTransport = "transport_error"
	classRequest   = "request_error"
	classCanceled  = "canceled"
)

// Secret is a signing secret; it never appears in logs or API responses.
type Secret = store.WebhookSecret

// Webhook is a registration.
type Webhook = store.Webhook

// wants reports whether w subscribes to events of type eventType.
func wants(w *Webhook, eventType string) bool {
	return slices.Contains(w.Events, eventType)
}
