package webhook

// QueueDepth counts the deliveries each team has queued: pending in
// memory, waiting for a retry or in flight. Every team with a webhook is
// present, at 0 when nothing is queued. It reads the engine's memory, not
// the database, so a metrics scrape costs no query. Deliveries parked for
// a disabled webhook are not queued (they wait in the database until it is
// enabled again).
func (e *Engine) QueueDepth() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.hooks))
	for _, h := range e.hooks {
		out[h.TeamID] += 0
	}
	for _, it := range e.known {
		if h := e.hooks[it.webhookID]; h != nil {
			out[h.TeamID]++
		}
	}
	return out
}
