package metrics

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/template"
)

// MaxTemplateNames caps the distinct template names that label series:
// teams create templates at will, and every name would be a new series in
// every histogram that has it. Past the cap, new names count as "other".
const MaxTemplateNames = 100

// OtherTemplate labels the templates over MaxTemplateNames.
const OtherTemplate = "other"

// createFailureReasons are the reasons a create fails, one per error
// category (errdefs), plus the client going away and everything else.
var createFailureReasons = []string{"invalid_argument", "not_found", "permission_denied", "failed_precondition",
	"conflict", "resource_exhausted", "unavailable", "deadline_exceeded", "canceled", "internal"}

// ops are the series about what the server does: HTTP requests, pool
// claims, builds and failed creates.
type ops struct {
	http      *prometheus.HistogramVec
	pool      *prometheus.CounterVec
	builds    *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	templates templateNames
}

func newOps() *ops {
	o := &ops{
		http: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sbx_http_request_duration_seconds",
			Help:    "HTTP requests by route (the API's pattern, \"proxy\" for sandbox traffic, \"unmatched\") and status code; _count counts them. Proxied streams last as long as the stream.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "code"}),
		pool: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_pool_claims_total",
			Help: "Creates of a template with a warm pool, by result: hit (a ready sandbox was taken) or miss (one started cold). team is the template's owner, \"\" for built-in templates.",
		}, []string{TeamLabel, "template", "result"}),
		builds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sbx_template_build_duration_seconds",
			Help:    "Template builds by team, template and result (success, failed); _count counts them.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600},
		}, []string{TeamLabel, "template", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbx_sandbox_create_failures_total",
			Help: "Sandbox creates that failed, by reason (the error category: resource_exhausted for caps and budgets, canceled when the client left).",
		}, []string{"reason"}),
		templates: templateNames{seen: map[string]bool{}},
	}
	for _, r := range createFailureReasons {
		o.failures.WithLabelValues(r)
	}
	return o
}

func (o *ops) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.http, o.pool, o.builds, o.failures}
}

// ObserveHTTP records one finished request (telemetry.Observer).
func (m *Metrics) ObserveHTTP(route string, code int, d time.Duration) {
	m.ops.http.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// PoolStarted makes a pool's hit and miss series exist at 0 (sandbox.Observer).
func (m *Metrics) PoolStarted(tpl template.Template) {
	name := m.ops.templates.label(templateName(tpl))
	m.ops.pool.WithLabelValues(tpl.TeamID, name, "hit")
	m.ops.pool.WithLabelValues(tpl.TeamID, name, "miss")
}

// PoolClaim counts a pool hit or miss (sandbox.Observer).
func (m *Metrics) PoolClaim(tpl template.Template, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.ops.pool.WithLabelValues(tpl.TeamID, m.ops.templates.label(templateName(tpl)), result).Inc()
}

var _ sandbox.Observer = (*Metrics)(nil)

// BuildStarted makes a build's template series exist at 0 before it ends.
func (m *Metrics) BuildStarted(teamID, name string) {
	name = m.ops.templates.label(name)
	m.ops.builds.WithLabelValues(teamID, name, "success")
	m.ops.builds.WithLabelValues(teamID, name, "failed")
}

// BuildFinished records a finished build.
func (m *Metrics) BuildFinished(teamID, name string, ok bool, d time.Duration) {
	result := "failed"
	if ok {
		result = "success"
	}
	m.ops.builds.WithLabelValues(teamID, m.ops.templates.label(name), result).Observe(d.Seconds())
}

// createFailed counts a failed create by the category of its error.
func (m *Metrics) createFailed(err error) {
	m.ops.failures.WithLabelValues(failureReason(err)).Inc()
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, errdefs.ErrInvalidArgument), errors.Is(err, errdefs.ErrTooLarge):
		return "invalid_argument"
	case errors.Is(err, errdefs.ErrNotFound):
		return "not_found"
	case errors.Is(err, errdefs.ErrPermissionDenied), errors.Is(err, errdefs.ErrUnauthenticated):
		return "permission_denied"
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return "failed_precondition"
	case errors.Is(err, errdefs.ErrConflict), errors.Is(err, errdefs.ErrAlreadyExists):
		return "conflict"
	case errors.Is(err, errdefs.ErrResourceExhausted):
		return "resource_exhausted"
	case errors.Is(err, errdefs.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, errdefs.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	return "internal"
}

func templateName(t template.Template) string {
	if len(t.Names) > 0 {
		return t.Names[0]
	}
	return t.ID
}

// templateNames bounds the template label: the first MaxTemplateNames
// distinct names keep theirs for the life of the process (the built-in
// templates' among them: their pools start first), later ones count as
// "other". Names, not IDs: a dashboard reads "base", and a template
// rebuilt under the same name keeps its series.
type templateNames struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (t *templateNames) label(name string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[name] {
		return name
	}
	if len(t.seen) >= MaxTemplateNames {
		return OtherTemplate
	}
	t.seen[name] = true
	return name
}
