package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	sig "github.com/sbxdev/sbx/sdk/webhook"
)

func TestDeliverEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, nil)
	hook := createHook(t, e.eng, "team-a", rc.srv.URL+"/hook")
	createHook(t, e.eng, "team-b", rc.srv.URL+"/other-team")
	run(t, e.eng)

	ctx := t.Context()
	for _, ev := range []*events.Event{
		{Type: events.SandboxCreated, TeamID: "team-a", SandboxID: "sb1", SandboxTemplateID: "base", EventData: map[string]any{"sandbox_metadata": map[string]any{"user": "x"}}},
		{Type: events.SandboxPaused, TeamID: "team-a", SandboxID: "sb1"}, // not subscribed
		{Type: events.SandboxKilled, TeamID: "team-a", SandboxID: "sb1", EventData: map[string]any{"kill_reason": "timeout"}},
	} {
		if err := e.log.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two deliveries", func() bool { return len(rc.all()) >= 2 })
	time.Sleep(50 * time.Millisecond) // nothing else may arrive
	got := bySeq(t, rc.all())
	if len(got) != 2 {
		t.Fatalf("receiver got %d deliveries, want 2", len(got))
	}
	var capture []map[string]any
	for i, want := range []string{events.SandboxCreated, events.SandboxKilled} {
		d := got[i]
		var body map[string]any
		if err := json.Unmarshal(d.body, &body); err != nil {
			t.Fatal(err)
		}
		if body["type"] != want || body["sandboxId"] != "sb1" || body["sandboxTeamId"] != "team-a" {
			t.Fatalf("delivery %d: %s", i, d.body)
		}
		for _, k := range []string{"id", "version", "type", "eventData", "sandboxId", "sandboxTemplateId", "sandboxBuildId", "sandboxExecutionId", "sandboxTeamId", "timestamp"} {
			if _, ok := body[k]; !ok {
				t.Errorf("delivery %d lacks %q: %s", i, k, d.body)
			}
		}
		if err := sig.VerifyE2B("s3cret-team-a", d.body, d.header.Get("e2b-signature")); err != nil {
			t.Errorf("delivery %d: e2b signature: %v", i, err)
		}
		if err := sig.VerifyStandard("s3cret-team-a", d.header, d.body, time.Minute); err != nil {
			t.Errorf("delivery %d: standard signature: %v", i, err)
		}
		if d.header.Get("e2b-webhook-id") != hook.ID || d.header.Get("e2b-signature-version") != "v1" ||
			d.header.Get("e2b-delivery-id") == "" || d.header.Get("webhook-id") == "" {
			t.Errorf("delivery %d headers: %v", i, d.header)
		}
		capture = append(capture, map[string]any{"secret": "s3cret-team-a", "bodyBase64": base64.StdEncoding.EncodeToString(d.body), "headers": flat(d.header)})
	}
	var killed map[string]any
	_ = json.Unmarshal(got[1].body, &killed)
	if killed["eventData"].(map[string]any)["kill_reason"] != "timeout" {
		t.Fatalf("kill_reason missing: %s", got[1].body)
	}
	pythonVerify(t, capture)

	// The attempt log shows each delivery's successful attempt, and not
	// what the receiver answered (its body and headers: null).
	waitFor(t, "attempts recorded", func() bool {
		p, err := e.eng.Deliveries(ctx, "team-a", hook.ID, DeliveryQuery{})
		return err == nil && len(p.Data) == 2 && len(p.Data[0].Attempts) == 1
	})
	p, _ := e.eng.Deliveries(ctx, "team-a", hook.ID, DeliveryQuery{OrderAsc: true})
	a := p.Data[0].Attempts[0]
	if p.Data[0].Status != stateSuccess || a.Status != stateSuccess || *a.ResponseHTTPStatusCode != 200 ||
		a.ResponseBody != nil || string(a.ResponseHeaders) != "null" || a.RequestURL != rc.srv.URL+"/hook" || p.Data[0].EventType != events.SandboxCreated {
		t.Fatalf("attempt log: %+v %+v", p.Data[0], a)
	}
	if strings.Contains(string(a.RequestHeaders), got[0].header.Get("e2b-signature")) {
		t.Fatalf("attempt log leaks the signature: %s", a.RequestHeaders)
	}
}

func flat(h http.Header) map[string]string {
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	return m
}

// pythonVerify has testdata/verify.py (stdlib hashlib/hmac, no shared
// code) check captured deliveries.
func pythonVerify(t *testing.T, capture []map[string]any) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		requireIntegration(t, "python3")
	}
	path := filepath.Join(t.TempDir(), "deliveries.json")
	b, _ := json.Marshal(capture)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join("..", "..", "sdk", "webhook", "testdata", "verify.py")
	out, err := exec.CommandContext(t.Context(), py, script, "deliveries", path).CombinedOutput()
	if err != nil {
		t.Fatalf("python verifier rejected deliveries: %v\n%s", err, out)
	}
}

func TestRetryAfterReceiverDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	// Receiver down: the first three requests answer 503, then it recovers.
	rc := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb"}); err != nil {
		t.Fatal(err)
	}
	var p *DeliveryPage
	waitFor(t, "delivery after retries", func() bool {
		var err error
		p, err = e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
		return err == nil && len(p.Data) == 1 && p.Data[0].Status == stateSuccess && len(p.Data[0].Attempts) == 4
	})
	at := p.Data[0].Attempts
	for i := range 3 {
		if at[i].Status != stateFailed || *at[i].ErrorClass != classHTTP || *at[i].ResponseHTTPStatusCode != 503 || at[i].Attempt != i+1 {
			t.Fatalf("attempt %d: %+v", i+1, at[i])
		}
	}
	if at[3].Status != stateSuccess || at[3].ErrorClass != nil {
		t.Fatalf("last attempt: %+v", at[3])
	}
	got := rc.all()
	if got[0].header.Get("webhook-id") != got[3].header.Get("webhook-id") || got[0].header.Get("e2b-delivery-id") == got[3].header.Get("e2b-delivery-id") {
		t.Fatal("webhook-id must be stable across retries and e2b-delivery-id unique per attempt")
	}
	h, _ := e.eng.Get(t.Context(), "t", hook.ID)
	if !h.Enabled || h.ConsecutiveFailures != 0 {
		t.Fatalf("success must reset the failure streak: %+v", h)
	}
}

func TestRetryClassifiesConnectionRefused(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond}
	e := newEnv(t, cfg)
	rc := newReceiver(t, nil)
	url := rc.srv.URL
	rc.srv.Close() // nothing listens there any more
	hook := createHook(t, e.eng, "t", url)
	run(t, e.eng)
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	waitFor(t, "delivery given up", func() bool {
		p, err := e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
		return err == nil && len(p.Data) == 1 && p.Data[0].Status == stateFailed && len(p.Data[0].Attempts) == 2
	})
	p, _ := e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
	if c := *p.Data[0].Attempts[0].ErrorClass; c != classTransport {
		t.Fatalf("error class %q, want %s", c, classTransport)
	}
}

func TestGoneDisablesAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, func(int) int { return http.StatusGone })
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	watch := newReceiver(t, nil)
	createHook(t, e.eng, "t", watch.srv.URL, events.WebhookDisabled)
	run(t, e.eng)
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	waitFor(t, "webhook disabled", func() bool {
		h, err := e.eng.Get(t.Context(), "t", hook.ID)
		return err == nil && !h.Enabled
	})
	h, _ := e.eng.Get(t.Context(), "t", hook.ID)
	if !strings.Contains(h.DisabledReason, "410") {
		t.Fatalf("reason %q", h.DisabledReason)
	}
	evs, _ := e.log.List(t.Context(), events.Filter{TeamID: "t", Types: []string{events.WebhookDisabled}})
	if len(evs) != 1 || evs[0].EventData["webhook_id"] != hook.ID {
		t.Fatalf("webhook.disabled events: %+v", evs)
	}
	p, _ := e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
	if p.Data[0].Status != stateFailed || len(p.Data[0].Attempts) != 1 {
		t.Fatalf("410 must not be retried: %+v", p.Data[0])
	}
	// A webhook subscribed to webhook.disabled is told about it.
	waitFor(t, "webhook.disabled delivered", func() bool {
		for _, d := range watch.all() {
			if strings.Contains(string(d.body), events.WebhookDisabled) {
				return true
			}
		}
		return false
	})
}

func TestAutoDisableAndReenable(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.DisableAfter, cfg.DisableAfterFailures = time.Nanosecond, 3
	e := newEnv(t, cfg)
	healthy := false
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	rc := newReceiver(t, func(int) int {
		<-mu
		defer func() { mu <- struct{}{} }()
		if healthy {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "one"})
	waitFor(t, "auto-disable", func() bool {
		h, err := e.eng.Get(t.Context(), "t", hook.ID)
		return err == nil && !h.Enabled
	})
	h, _ := e.eng.Get(t.Context(), "t", hook.ID)
	if !strings.Contains(h.DisabledReason, "3 consecutive failed attempts") {
		t.Fatalf("reason %q", h.DisabledReason)
	}
	n := len(rc.all())
	time.Sleep(300 * time.Millisecond) // retries would have fired by now
	if len(rc.all()) != n {
		t.Fatalf("a disabled webhook still receives deliveries: %d then %d", n, len(rc.all()))
	}
	// Fix the endpoint, enable the webhook: the parked delivery goes out.
	<-mu
	healthy = true
	mu <- struct{}{}
	if _, err := e.eng.Update(t.Context(), "t", hook.ID, Input{Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "parked delivery sent", func() bool {
		p, err := e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
		return err == nil && len(p.Data) == 1 && p.Data[0].Status == stateSuccess
	})
}

// Attempts in flight when their webhook is disabled fail after it: they
// must not add to the failure streak that disabled it (a re-enabled
// webhook's streak, or the reason's count, would otherwise say more than
// the endpoint's failures while it was on). Four deliveries go out at
// once; the second failure disables the webhook; the streak stays at 2.
func TestAttemptsAfterDisableDoNotCount(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Workers, cfg.PerWebhook = 8, 4
	cfg.DisableAfter, cfg.DisableAfterFailures = time.Nanosecond, 2
	cfg.RetrySchedule = []time.Duration{time.Hour} // no retry during the test
	e := newEnv(t, cfg)
	release := make(chan struct{})
	rc := newReceiver(t, func(int) int {
		<-release
		return http.StatusInternalServerError
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	const sent = 4
	for i := range sent {
		_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: fmt.Sprint("sb", i)})
	}
	waitFor(t, "all in flight", func() bool { return len(rc.all()) == sent })
	close(release)
	waitFor(t, "all attempts recorded", func() bool {
		p, err := e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
		n := 0
		for _, d := range p.Data {
			n += len(d.Attempts)
		}
		return err == nil && n == sent
	})
	h, err := e.eng.Get(t.Context(), "t", hook.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Enabled || h.ConsecutiveFailures != 2 || !strings.Contains(h.DisabledReason, "2 consecutive failed attempts") {
		t.Fatalf("enabled %v, streak %d (want 2: the attempts that failed after the disable do not count), reason %q",
			h.Enabled, h.ConsecutiveFailures, h.DisabledReason)
	}
}

func TestSSRF(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	port := rc.srv.URL[strings.LastIndex(rc.srv.URL, ":")+1:]

	strict := newEnv(t, Config{Workers: 2, RetrySchedule: []time.Duration{}})
	if _, err := strict.eng.Create(t.Context(), "t", Input{Name: ptr("x"), URL: ptr(rc.srv.URL), Events: &[]string{events.SandboxCreated}, SignatureSecret: ptr("s")}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("literal loopback URL accepted: %v", err)
	}
	// A host name passes registration; the dial check refuses the resolved address.
	hook := createHook(t, strict.eng, "t", "http://localhost:"+port)
	run(t, strict.eng)
	_ = strict.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	var p *DeliveryPage
	waitFor(t, "refused attempt", func() bool {
		var err error
		p, err = strict.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
		return err == nil && len(p.Data) == 1 && len(p.Data[0].Attempts) == 1
	})
	a := p.Data[0].Attempts[0]
	if *a.ErrorClass != classRequest || !strings.Contains(*a.ErrorMessage, "--webhook-allow-private") {
		t.Fatalf("refusal: %s %s", *a.ErrorClass, *a.ErrorMessage)
	}
	if len(rc.all()) != 0 {
		t.Fatal("the receiver was reached despite the SSRF check")
	}

	// An allowlisted CIDR gets through.
	allowed := newEnv(t, Config{Workers: 2, AllowCIDRs: []string{"127.0.0.0/8", "::1/128"}})
	hook2 := createHook(t, allowed.eng, "t", "http://localhost:"+port)
	run(t, allowed.eng)
	_ = allowed.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	waitFor(t, "allowed delivery", func() bool { return len(rc.all()) == 1 })
	_ = hook2
}

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	cfg := Config{AllowCIDRs: []string{"10.1.0.0/16"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8", true}, {"2606:4700::1111", true},
		{"127.0.0.1", false}, {"::1", false}, {"10.0.0.1", false}, {"10.1.2.3", true}, {"172.16.0.1", false},
		{"192.168.1.1", false}, {"169.254.169.254", false}, {"fe80::1", false}, {"fd00::1", false},
		{"100.64.0.1", false}, {"0.0.0.0", false}, {"::ffff:127.0.0.1", false}, {"64:ff9b::a00:1", false},
		{"224.0.0.1", false}, {"255.255.255.255", false},
	} {
		err := cfg.checkAddr(mustAddr(t, tt.addr))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err=%v, want ok=%v", tt.addr, err, tt.ok)
		}
	}
	if err := (&Config{AllowCIDRs: []string{"nope"}}).Validate(); err == nil {
		t.Error("bad CIDR accepted")
	}
}

// TestOrderPerWebhook: with one delivery in flight per webhook a healthy
// endpoint receives events in the order they happened; with several they
// arrive in any order, and ordering them by the sbx-event-seq header, as
// the docs tell receivers to, gives the event order back.
func TestOrderPerWebhook(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		perWebhook   int
		arrivalOrder bool // arrivals themselves are in event order
	}{
		{1, true},
		{4, false},
	} {
		t.Run("per-webhook="+itoa(tt.perWebhook), func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.PerWebhook = tt.perWebhook
			e := newEnv(t, cfg)
			rc := newReceiver(t, nil)
			createHook(t, e.eng, "t", rc.srv.URL)
			run(t, e.eng)
			const n = 200
			for i := range n {
				if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb" + itoa(i)}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "all delivered", func() bool { return len(rc.all()) == n })
			got := rc.all()
			if !tt.arrivalOrder {
				got = bySeq(t, got)
			}
			for i, d := range got {
				var b events.JSON
				_ = json.Unmarshal(d.body, &b)
				if b.SandboxID != "sb"+itoa(i) {
					t.Fatalf("delivery %d is %s: out of order", i, b.SandboxID)
				}
			}
		})
	}
}

func TestTestPingAndRedeliver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, nil)
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	a, err := e.eng.Test(t.Context(), "t", hook.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != stateSuccess || a.EventType != "webhook.test" || *a.ResponseHTTPStatusCode != 200 {
		t.Fatalf("ping: %+v", a)
	}
	if err := sig.VerifyStandard("s3cret-t", rc.all()[0].header, rc.all()[0].body, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Redeliver by attempt id (e2b-delivery-id) and by delivery id (webhook-id).
	for _, id := range []string{a.ID, a.DeliveryID} {
		before := len(rc.all())
		did, err := e.eng.Redeliver(t.Context(), "t", hook.ID, id)
		if err != nil || did != a.DeliveryID {
			t.Fatalf("redeliver %s: %s %v", id, did, err)
		}
		waitFor(t, "redelivery", func() bool { return len(rc.all()) == before+1 })
		if rc.all()[before].header.Get("webhook-id") != a.DeliveryID {
			t.Fatal("redelivery must keep webhook-id")
		}
	}
	if _, err := e.eng.Redeliver(t.Context(), "other-team", hook.ID, a.ID); err == nil {
		t.Fatal("another team redelivered")
	}
}

func itoa(i int) string { return strconvItoa(i) }

var _ = context.Background

func TestSweepKeepsPendingAndRecent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Now()
	cfg := fastConfig()
	cfg.RetrySchedule = []time.Duration{time.Hour} // the failing delivery stays pending
	cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, cfg)
	ok := newReceiver(t, nil)
	bad := newReceiver(t, func(int) int { return 500 })
	good := createHook(t, e.eng, "t", ok.srv.URL)
	failing := createHook(t, e.eng, "t", bad.srv.URL)
	run(t, e.eng)
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	count := func(id string) int {
		p, err := e.eng.Deliveries(t.Context(), "t", id, DeliveryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range p.Data {
			n += len(g.Attempts)
		}
		return n
	}
	waitFor(t, "both attempted", func() bool { return count(good.ID) == 1 && count(failing.ID) == 1 })
	if n, err := e.eng.Sweep(t.Context()); err != nil || n != 0 {
		t.Fatalf("sweep of fresh deliveries: %d %v", n, err)
	}
	mu.Lock()
	now = now.Add(8 * 24 * time.Hour)
	mu.Unlock()
	if n, err := e.eng.Sweep(t.Context()); err != nil || n != 1 {
		t.Fatalf("sweep after 8 days: %d %v, want 1", n, err)
	}
	if count(good.ID) != 0 || count(failing.ID) != 1 {
		t.Fatalf("after sweep: good %d attempts, failing %d", count(good.ID), count(failing.ID))
	}
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	slow := newReceiver(t, func(int) int { time.Sleep(2 * time.Second); return 200 })
	for _, tt := range []struct {
		name, url, class string
	}{
		{"timeout", slow.srv.URL, classTimeout},
		{"dns", "http://no-such-host.invalid/hook", classDNS},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.Timeout = 200 * time.Millisecond
			cfg.RetrySchedule = []time.Duration{}
			e := newEnv(t, cfg)
			hook := createHook(t, e.eng, "t", tt.url)
			run(t, e.eng)
			_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
			var p *DeliveryPage
			waitFor(t, "failed attempt", func() bool {
				var err error
				p, err = e.eng.Deliveries(t.Context(), "t", hook.ID, DeliveryQuery{})
				return err == nil && len(p.Data) == 1 && len(p.Data[0].Attempts) == 1
			})
			a := p.Data[0].Attempts[0]
			if a.ErrorClass == nil || *a.ErrorClass != tt.class || p.Data[0].Status != stateFailed {
				t.Fatalf("attempt: class %v message %v status %s", *a.ErrorClass, *a.ErrorMessage, p.Data[0].Status)
			}
		})
	}
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, nil)
	hook := createHook(t, e.eng, "t", rc.srv.URL) // secret "s3cret-t"
	run(t, e.eng)
	if _, err := e.eng.Update(t.Context(), "t", hook.ID, Input{SignatureSecret: ptr("whsec_bmV3LXNlY3JldC1ieXRlcw==")}); err != nil {
		t.Fatal(err)
	}
	_ = e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t"})
	waitFor(t, "delivery", func() bool { return len(rc.all()) == 1 })
	d := rc.all()[0]
	for _, secret := range []string{"s3cret-t", "whsec_bmV3LXNlY3JldC1ieXRlcw=="} {
		if err := sig.VerifyStandard(secret, d.header, d.body, time.Minute); err != nil {
			t.Errorf("during rotation, %s must verify: %v", secret, err)
		}
	}
	if err := sig.VerifyE2B("whsec_bmV3LXNlY3JldC1ieXRlcw==", d.body, d.header.Get("e2b-signature")); err != nil {
		t.Errorf("e2b-signature uses the new secret: %v", err)
	}
	if sig.VerifyStandard("unrelated", d.header, d.body, time.Minute) == nil {
		t.Error("an unrelated secret verified")
	}
}
