// Command refinement reproduces the seed's AdvancedIterativeCodeGenerator
// against sbx: generate working data-analysis code with an LLM, running
// each attempt in a fresh sandbox of the data-science template
// (code-interpreter: numpy, pandas, matplotlib, scipy, seaborn
// preinstalled), feeding errors back, while a webhook receiver in this
// process watches the generation's sandboxes come and go.
//
// The refinement loop runs in the server, so `sbx serve` needs an LLM and
// must allow webhook deliveries to this local receiver:
//
//	SBX_LLM_BASE_URL=http://localhost:11434/v1 SBX_LLM_MODEL=qwen2.5-coder:7b \
//	  sbx serve --webhook-allow-private
//	eval "$(sbx env)"
//	go run ./examples/refinement --requirement "Load the iris-like data below into pandas and plot ..."
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

func main() {
	requirement := flag.String("requirement",
		"Generate 200 samples of two correlated normal variables with numpy (seed 7), put them in a pandas DataFrame, "+
			"print the Pearson correlation rounded to 2 decimals, and show a scatter plot with matplotlib.",
		"what the code should do")
	template := flag.String("template", "code-interpreter", "template with the data-science stack")
	maxAttempts := flag.Int("max-attempts", 3, "give up after this many attempts")
	correlationID := flag.String("correlation-id", fmt.Sprintf("req-%d", time.Now().Unix()), "the generation's correlation ID")
	listen := flag.String("listen", "127.0.0.1:0", "address of the webhook receiver")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *requirement, *template, *maxAttempts, *correlationID, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "refinement:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, requirement, template string, maxAttempts int, corr, listen string) error {
	cfg := sdk.ConfigFromEnv()
	client, err := sdk.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("%w (run `eval \"$(sbx env)\"` first)", err)
	}
	mon := NewMonitor(os.Stdout)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("webhook receiver: %w", err)
	}
	srv := &http.Server{Handler: mon, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	g := &Generator{Client: client, APIURL: cfg.APIURL, APIKey: cfg.APIKey, Template: template, MaxAttempts: maxAttempts,
		WebhookURL: "http://" + ln.Addr().String(), Monitor: mon, Out: os.Stdout}
	fmt.Printf("Generation %s: webhook receiver on %s\n", corr, ln.Addr())
	wctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	out, err := g.Generate(wctx, requirement, corr)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	fmt.Printf("\nSuccess: %v\nAttempts: %d\n", out.Success, out.Attempts)
	if out.Success {
		fmt.Printf("Code:\n%s\n", out.Code)
	}
	return enc.Encode(out)
}
