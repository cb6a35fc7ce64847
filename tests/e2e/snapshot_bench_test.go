package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"

	"github.com/sbxdev/sbx/sdk"
)

// BenchmarkTemplateSnapshot measures what template snapshots buy: the time
// from a create request to the first useful answer of the sandbox's start
// command, for sandboxes restored from the template's snapshot and for
// sandboxes that run the start command cold, on two servers in the same run
// (same machine, same load, samples interleaved so drift hits both alike):
//
//	snapshot: default server, --pool '*=0:0' (every create restores)
//	cold:     --snapshot-runtime none --pool '*=0:0' (every create runs the start command)
//	pool:     default server, default pools (what a user sees: pooled
//	          sandboxes are refilled from the snapshot); measured after the
//	          two others, on its own, so its refills load no other sample.
//
// Run it with `make bench-snapshot`. It reports p50/p95 per server and the
// ratio cold/snapshot of the p50s; it asserts no time.
func BenchmarkTemplateSnapshot(b *testing.B) {
	testenv.Require(b, testenv.Integration...)
	requireRunsc(b, "the snapshot benchmark (no server takes snapshots without it)")
	snap := StartServer(b, "--pool", "*=0:0")
	cold := StartServer(b, "--snapshot-runtime", "none", "--pool", "*=0:0")
	for _, sc := range benchScenarios {
		b.Run(sc.name, func(b *testing.B) { benchScenario(b, sc, snap, cold) })
	}
}

// benchSamples is the number of timed creates per server and b.N: enough
// for a p95 that is not the maximum of a handful. SBX_BENCH_SAMPLES
// overrides it (a quick look, or a longer run).
func benchSamples(b *testing.B) int {
	v := os.Getenv("SBX_BENCH_SAMPLES")
	if v == "" {
		return 20
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("SBX_BENCH_SAMPLES=%q: want a whole number of samples >= 1, e.g. 20", v)
	}
	return n
}

// poolThink is the pause before each create on the pooled server, outside
// the timed part: a user's think time, in which the pool refills.
const poolThink = 2 * time.Second

// sampleWait bounds one sample (create + first answer); it only turns a
// hang into a clear failure.
const sampleWait = 3 * time.Minute

type snapScenario struct {
	name       string
	dockerfile string
	buildArgs  []string
	// first waits for the start command's first useful answer in sb and
	// checks it is the right one.
	first func(ctx context.Context, s *Server, sb *sdk.Sandbox) error
}

// benchHTTPStart does real start-up work before serving: imports, then a
// second of building a table, then an HTTP server on 8000 that answers with
// the table's size. A restored sandbox has all of it done already.
const benchHTTPStart = `import time, json, hashlib, decimal, sqlite3, email.parser, xml.etree.ElementTree, http.server as h
t = time.time(); table = {}; i = 0
while time.time() - t < 1:
    table[i] = hashlib.sha256(str(i).encode()).hexdigest(); i += 1
body = json.dumps({"entries": len(table)}).encode()
class H(h.BaseHTTPRequestHandler):
    def do_GET(s):
        s.send_response(200); s.end_headers(); s.wfile.write(body)
    def log_message(s, *a): pass
h.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
`

// benchPandasStart loads a data model, then serves its shape on port 8000.
const benchPandasStart = `
import numpy, pandas, matplotlib, http.server as h
matplotlib.use("Agg")
import matplotlib.pyplot
df = pandas.DataFrame(numpy.random.default_rng(1).random((200000, 8)))
body = str(df.shape).encode()
class H(h.BaseHTTPRequestHandler):
    def do_GET(s):
        s.send_response(200); s.end_headers(); s.wfile.write(body)
    def log_message(s, *a): pass
h.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
`

var benchScenarios = []snapScenario{
	{
		// A service that loads a data model before it serves: numpy,
		// pandas and matplotlib imported, a 200k-row frame built. (The
		// code interpreter's own kernel server is not snapshotted: see
		// template.Template.NoSnapshot.)
		name:       "pandas-server",
		dockerfile: "FROM code-interpreter\nRUN echo bench > /opt/bench.txt\nCMD " + mustJSON([]string{"python3", "-c", benchPandasStart}) + "\n",
		buildArgs:  []string{"--ready-cmd", "curl -sf localhost:8000"},
		first: func(ctx context.Context, s *Server, sb *sdk.Sandbox) error {
			body, err := firstPortResponse(ctx, s, sb.ID, 8000)
			if err != nil {
				return err
			}
			if !strings.Contains(string(body), "200000") {
				return fmt.Errorf("port 8000 answered %q, want the frame's row count 200000", body)
			}
			return nil
		},
	},
	{
		name:       "http-start",
		dockerfile: "FROM base\nRUN echo bench > /opt/bench.txt\nCMD " + mustJSON([]string{"python3", "-c", benchHTTPStart}) + "\n",
		buildArgs:  []string{"--ready-cmd", "curl -sf localhost:8000"},
		first: func(ctx context.Context, s *Server, sb *sdk.Sandbox) error {
			body, err := firstPortResponse(ctx, s, sb.ID, 8000)
			if err != nil {
				return err
			}
			var got struct{ Entries int }
			if err := json.Unmarshal(body, &got); err != nil || got.Entries == 0 {
				return fmt.Errorf("port 8000 answered %q, want {\"entries\": N>0} (err %v)", body, err)
			}
			return nil
		},
	},
}

// mustJSON is v as a Dockerfile exec-form array: plain JSON, < and > as is.
func mustJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSpace(buf.String())
}

// benchScenario builds sc's template on every server, then times creates.
func benchScenario(b *testing.B, sc snapScenario, snap, cold *Server) {
	tpl := "bench-" + sc.name
	buildBenchTemplate(b, snap, sc, tpl, "snapshot: saved")
	buildBenchTemplate(b, cold, sc, tpl, "run the start command when they start")

	snapFellBack := len(restoreFellBack(snap)) // the server is shared by the scenarios
	measure := func(s *Server) sample {
		smp, sb := benchSample(b, s, sc, tpl)
		killBench(b, sb) // untimed
		return smp
	}
	// One untimed create each: the first restore reads the snapshot from
	// disk, later ones find it in the page cache, as on a server in use.
	firstSnap, firstCold := measure(snap), measure(cold)

	n := benchSamples(b) * b.N
	var snapS, coldS []sample
	b.ResetTimer()
	for i := range n {
		// Alternate which server goes first so neither always runs
		// right after the other's kill.
		if i%2 == 0 {
			snapS = append(snapS, measure(snap))
			coldS = append(coldS, measure(cold))
		} else {
			coldS = append(coldS, measure(cold))
			snapS = append(snapS, measure(snap))
		}
	}
	b.StopTimer()

	// The pooled server runs alone: its default pools and refills would
	// otherwise load the two servers above.
	pooled := StartServer(b)
	buildBenchTemplate(b, pooled, sc, tpl, "snapshot: saved")
	firstPool := measure(pooled) // starts the template's pool (demand-sized)
	var poolS []sample
	for range n {
		time.Sleep(poolThink)
		poolS = append(poolS, measure(pooled))
	}
	// Before the stop: a refill cut short by it is logged as a failed
	// restore too, but no sample used it.
	poolFellBack := restoreFellBack(pooled)
	pooled.Stop(syscall.SIGTERM) // free its pools before the next scenario

	rows := []struct {
		name    string
		first   sample
		samples []sample
	}{
		{"snapshot", firstSnap, snapS},
		{"cold", firstCold, coldS},
		{"pool", firstPool, poolS},
	}
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%s: ms from create request to first answer (create: until Create returned), %d samples per server\n", sc.name, n)
	fmt.Fprintf(&tbl, "%-9s %7s %7s %7s %7s %7s %11s %7s %8s %7s %8s\n", "server", "first", "p50", "p95", "min", "max", "create-p50", "pooled", "slowdial", "p50*", "2nd-p50")
	p50 := map[string]float64{}
	for _, r := range rows {
		total, create := field(r.samples, func(s sample) float64 { return s.ms }), field(r.samples, func(s sample) float64 { return s.createMS })
		again := field(r.samples, func(s sample) float64 { return s.againMS })
		pooledN, slow := 0, 0
		var fast []float64 // samples without a slow first dial
		for _, s := range r.samples {
			if s.pooled {
				pooledN++
			}
			if s.ms-s.createMS >= slowDialMS {
				slow++
			} else {
				fast = append(fast, s.ms)
			}
		}
		p50[r.name] = percentile(total, 50)
		b.ReportMetric(p50[r.name], r.name+"-p50-ms")
		b.ReportMetric(percentile(total, 95), r.name+"-p95-ms")
		fmt.Fprintf(&tbl, "%-9s %7.0f %7.0f %7.0f %7.0f %7.0f %11.0f %4d/%-2d %5d/%-2d %7.0f %8.0f\n", r.name, r.first.ms, p50[r.name], percentile(total, 95),
			slices.Min(total), slices.Max(total), percentile(create, 50), pooledN, len(r.samples), slow, len(r.samples), percentile(fast, 50),
			percentile(again, 50))
	}
	b.ReportMetric(p50["cold"]/p50["snapshot"], "cold/snapshot-p50")
	b.ReportMetric(p50["cold"]/p50["pool"], "cold/pool-p50")
	fmt.Fprintf(&tbl, "cold/snapshot p50 = %.2fx, cold/pool p50 = %.2fx (pool: %s between creates, untimed)\n",
		p50["cold"]/p50["snapshot"], p50["cold"]/p50["pool"], poolThink)
	fmt.Fprintf(&tbl, "slowdial: first answer >= %.0f ms after Create returned: the proxy's dial to the sandbox's address timed out\n"+
		"(it did while the host kept a reused address's neighbour entry naming a dead sandbox's MAC, fixed in b8e04d9);\n"+
		"p50* is the p50 of the other samples (NaN when none); 2nd-p50: the same request sent again right after\n"+
		"(not in p50): what each later request costs", slowDialMS)
	for srv, lines := range map[string][]string{"snapshot": restoreFellBack(snap)[snapFellBack:], "pool": poolFellBack} {
		if len(lines) > 0 {
			fmt.Fprintf(&tbl, "\nWARNING: on the %s server %d restores from the snapshot failed and started cold instead:\n%s",
				srv, len(lines), strings.Join(lines, "\n"))
		}
	}
	b.Logf("%s", tbl.String())
}

// slowDialMS is the proxy's dial timeout towards a sandbox address before it
// falls back to the agent's forwarder (internal/proxy directTransport). A
// first answer that long after Create returned is counted, not excluded.
const slowDialMS = 2000.0

type sample struct {
	ms       float64 // create request to first answer
	createMS float64 // create request to Create returning
	againMS  float64 // the same request again, untimed above
	pooled   bool    // the server handed out a pooled sandbox
}

func field(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// benchSample times one create up to the start command's first useful
// answer and returns the sandbox, still running, for the caller to kill.
func benchSample(b *testing.B, s *Server, sc snapScenario, tpl string) (sample, *sdk.Sandbox) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), sampleWait)
	defer cancel()
	c := s.Client(b)
	t0 := time.Now()
	sb, err := c.Create(ctx, sdk.CreateOptions{Template: tpl})
	created := time.Since(t0)
	if err != nil {
		b.Fatalf("%s: create from %s on server %q: %v", sc.name, tpl, strings.Join(s.Extra, " "), err)
	}
	err = sc.first(ctx, s, sb)
	elapsed := time.Since(t0)
	var again time.Duration
	if err == nil {
		// The same request once more: what each later request costs
		// (restored sandboxes run under the snapshot runtime, cold ones
		// under the server's runtime).
		t1 := time.Now()
		err = sc.first(ctx, s, sb)
		again = time.Since(t1)
	}
	if err != nil {
		killBench(b, sb)
		b.Fatalf("%s: sandbox %s on server %q: first answer: %v", sc.name, sb.ID, strings.Join(s.Extra, " "), err)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return sample{ms: ms(elapsed), createMS: ms(created), againMS: ms(again), pooled: createdPooled(s, sb.ID)}, sb
}

func killBench(b *testing.B, sb *sdk.Sandbox) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.Context()), time.Minute)
	defer cancel()
	if err := sb.Kill(ctx); err != nil {
		b.Errorf("kill sandbox %s: %v", sb.ID, err)
	}
}

// createdPooled reads the server's log (slog text lines) for whether it
// handed out a pooled sandbox for id.
func createdPooled(s *Server, id string) bool {
	f := logRecord(s, "sandbox created", id)
	return slices.Contains(f, "pooled=true")
}

// restoreFellBack returns the server's log lines so far about sandboxes
// that were to be restored from a snapshot but started cold: a sample on
// such a sandbox timed a cold start.
func restoreFellBack(s *Server) []string {
	var out []string
	for line := range strings.Lines(s.Log()) {
		if strings.Contains(line, `msg="restore from template snapshot failed; starting cold"`) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// logRecord returns the fields of the server's log line with message msg
// about sandbox id, nil when there is none.
func logRecord(s *Server, msg, id string) []string {
	for line := range strings.Lines(s.Log()) {
		if !strings.Contains(line, `msg="`+msg+`"`) {
			continue
		}
		if f := strings.Fields(line); slices.Contains(f, "sandbox.id="+id) {
			return f
		}
	}
	return nil
}

// buildBenchTemplate builds sc's template on s with `sbx template build`
// and checks the build log says what the server does with the start
// command (want), so no server measures something other than it claims.
func buildBenchTemplate(b *testing.B, s *Server, sc snapScenario, tpl, want string) {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(dir+"/e2b.Dockerfile", []byte(sc.dockerfile), 0o644); err != nil {
		b.Fatal(err)
	}
	args := append([]string{"template", "build", "--name", tpl}, sc.buildArgs...)
	cmd := exec.CommandContext(b.Context(), s.Bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_API_KEY="+s.APIKey, "E2B_SANDBOX_URL="+s.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("sbx template build %s on %s: %v\n%s", tpl, strings.Join(s.Extra, " "), err, out)
	}
	if !strings.Contains(string(out), want) && !strings.Contains(string(out), "CACHED snapshot") {
		b.Fatalf("build of %s on server %q does not say %q:\n%s", tpl, strings.Join(s.Extra, " "), want, out)
	}
}

// firstPortResponse polls port of sandbox id through the sbx proxy until
// it answers 200 and returns the body. Create returns after the ready
// command passed, so the first try normally succeeds; polling keeps a slow
// proxy path from being reported as an error.
func firstPortResponse(ctx context.Context, s *Server, id string, port int) ([]byte, error) {
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/", nil)
		req.Header.Set("E2b-Sandbox-Id", id)
		req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(port))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return body, nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("port %d of %s never answered 200 (last: %s): %w", port, id, last, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// percentile is the nearest-rank p-th percentile of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
