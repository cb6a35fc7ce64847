package webhook

import (
	"fmt"
	"net/http"
	"time"
)

// streak applies an attempt's outcome to its webhook's failure streak (e.mu
// held): a success ends it, a failure adds to it and disables the webhook
// once it is long enough, or at once on 410 Gone. Only attempts that end
// while their webhook is on count: one in flight when another failure
// disabled it (or its user did) would add to the count that disabled it,
// and a test ping or a manual redelivery never counts.
func (e *Engine) streak(h *Webhook, it *item, r *result, now time.Time) {
	if h == nil || it.force || !h.Enabled {
		return
	}
	if r.ok {
		if h.ConsecutiveFailures != 0 || !h.FailingSince.IsZero() {
			h.ConsecutiveFailures, h.FailingSince = 0, time.Time{}
			r.countersChanged = true
		}
		return
	}
	h.ConsecutiveFailures++
	r.countersChanged = true
	if h.FailingSince.IsZero() {
		h.FailingSince = now
	}
	reason := ""
	switch {
	case r.respStatus == http.StatusGone:
		reason = "the endpoint answered 410 Gone"
	case h.ConsecutiveFailures >= e.cfg.DisableAfterFailures && now.Sub(h.FailingSince) >= e.cfg.DisableAfter:
		reason = fmt.Sprintf("%d consecutive failed attempts since %s", h.ConsecutiveFailures, h.FailingSince.Format(time.RFC3339))
	}
	if reason == "" {
		return
	}
	h.Enabled, h.DisabledReason, h.UpdatedAt = false, reason, now
	r.disabled, r.disabledReason = true, reason
	e.log.Warn("webhook disabled", "webhook.id", h.ID, "team.id", h.TeamID, "reason", reason)
}
