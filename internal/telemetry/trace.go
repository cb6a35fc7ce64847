// Package telemetry is sbx's request observability: request IDs carried
// into every log line of a request, the access log, and OpenTelemetry
// traces exported over OTLP when an endpoint is configured. With no
// endpoint nothing is exported and the tracing calls are no-ops: spans
// started through Start cost a context lookup.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of sbx's spans.
const ScopeName = "github.com/sbxdev/sbx"

// Config says where traces go.
type Config struct {
	// OTLPEndpoint is an OTLP/HTTP collector's base URL
	// (http://collector:4318; /v1/traces is added when the URL has no
	// path). "" = the standard OTEL_EXPORTER_OTLP_ENDPOINT and
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables, else no tracing.
	OTLPEndpoint string
	// ServiceVersion is reported as service.version.
	ServiceVersion string
}

// Validate checks the endpoint is a URL the exporter can use.
func (c Config) Validate() error {
	if c.OTLPEndpoint == "" {
		return nil
	}
	u, err := url.Parse(c.OTLPEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--otlp-endpoint %q: want an OTLP/HTTP collector URL such as http://127.0.0.1:4318", c.OTLPEndpoint)
	}
	return nil
}

// Tracing is the server's tracer provider; a nil or disabled Tracing
// traces nothing.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// Enabled says whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

func (t *Tracing) tracer() trace.Tracer {
	if !t.Enabled() {
		return nil
	}
	return t.provider.Tracer(ScopeName)
}

// Setup starts exporting spans when cfg or the environment names an OTLP
// endpoint, and installs the provider as the global one that Start uses.
// Without an endpoint it returns a disabled Tracing and installs nothing.
func Setup(ctx context.Context, cfg Config, log *slog.Logger) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var opts []otlptracehttp.Option
	switch {
	case cfg.OTLPEndpoint != "":
		u, _ := url.Parse(cfg.OTLPEndpoint)
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	case os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "":
		return &Tracing{}, nil
	}
	// The exporter reads the other OTEL_EXPORTER_OTLP_* variables
	// (headers, timeout, certificates) itself.
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("sbx"), semconv.ServiceVersion(cfg.ServiceVersion)))
	if err != nil {
		res = resource.Default() // a schema clash with OTEL_RESOURCE_ATTRIBUTES: keep the defaults
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)),
		sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	log.Info("exporting traces over OTLP/HTTP", "endpoint", endpointForLog(cfg))
	return &Tracing{provider: tp}, nil
}

func endpointForLog(cfg Config) string {
	if cfg.OTLPEndpoint != "" {
		return cfg.OTLPEndpoint
	}
	return "from OTEL_EXPORTER_OTLP_* variables"
}

// Shutdown flushes the spans not yet exported.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	otel.SetTracerProvider(noop.NewTracerProvider())
	return t.provider.Shutdown(ctx)
}

// Start starts a span named name as a child of ctx's span. When ctx has no
// recording span (tracing off, or an untraced background job) it returns
// ctx and a no-op span without touching the provider: the create path
// pays nothing for its spans when nobody collects them.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
