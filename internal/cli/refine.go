package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/llm"
	"github.com/sbxdev/sbx/internal/refine"
)

func newRefineCmd() *cobra.Command { return refineCmd(os.Exit) }

// refineCmd takes exit so tests can see the exit status without dying.
func refineCmd(exit func(int)) *cobra.Command {
	var (
		opts                        clientOptions
		ro                          refine.Options
		testFile, imagesDir, runTO  string
		llmProvider, llmURL, llmKey string
		llmModel, llmTO             string
		asJSON, verbose             bool
	)
	cmd := &cobra.Command{
		Use:   "refine REQUIREMENT",
		Short: "Let an LLM write code, run it in sandboxes and feed errors back until it works",
		Long: `Iterative refinement: an LLM writes a program for REQUIREMENT, a fresh sandbox from
--template runs it, and its error (trimmed traceback) and output go back into the next
prompt, until the program runs without error, passes --test and matches --expect, or
--max-attempts rounds have failed. Each attempt is printed as it happens; at the end the
final code is printed (with --json: one JSON object on stdout and nothing else).

The loop runs in this process; the server is used only for sandboxes, each tagged
with metadata refinement_id=<id> so its lifecycle events and webhooks carry it.
The LLM is any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM,
llama.cpp, LM Studio, gateways) or Anthropic, configured by SBX_LLM_BASE_URL,
SBX_LLM_API_KEY, SBX_LLM_MODEL (and SBX_LLM_PROVIDER=anthropic) or the --llm-* flags.

Exit status: 0 when an attempt passed, 1 otherwise.`,
		Example: `  eval "$(sbx env)"
  export SBX_LLM_BASE_URL=http://localhost:11434/v1 SBX_LLM_MODEL=qwen2.5-coder:7b
  sbx refine "Plot a sine wave and print its maximum" --expect '1\.0'
  sbx refine "Parse /etc/os-release into a dict and print it" --test test_parse.py --json
  sbx refine "Print the 20th Fibonacci number" --language bash --template base
  SBX_LLM_PROVIDER=anthropic SBX_LLM_API_KEY=... SBX_LLM_MODEL=claude-sonnet-4-5 sbx refine "..."`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			ro.Requirement = args[0]
			if ro.Requirement == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("read requirement from stdin: %w", err)
				}
				ro.Requirement = string(b)
			}
			if testFile != "" {
				b, err := os.ReadFile(testFile)
				if err != nil {
					return fmt.Errorf("--test: %w", err)
				}
				ro.TestCode = string(b)
			}
			if runTO != "" {
				d, err := parseTimeout(runTO)
				if err != nil {
					return fmt.Errorf("--run-timeout: %w", err)
				}
				ro.RunTimeout = d
			}
			if err := ro.Validate(); err != nil {
				return err
			}
			ro.ImagesDir = imagesDir
			if ro.ImagesDir == "" {
				ro.ImagesDir = "refinement-" + ro.ID
			}
			cfg, err := llm.ConfigFromEnv()
			if err != nil {
				return err
			}
			for _, o := range []struct {
				flag, val string
				dst       *string
			}{
				{"llm-provider", llmProvider, &cfg.Provider}, {"llm-base-url", llmURL, &cfg.BaseURL},
				{"llm-api-key", llmKey, &cfg.APIKey}, {"llm-model", llmModel, &cfg.Model},
			} {
				if o.val != "" {
					*o.dst = o.val
				}
			}
			if llmTO != "" {
				if cfg.Timeout, err = parseTimeout(llmTO); err != nil {
					return fmt.Errorf("--llm-timeout: %w", err)
				}
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			gen, err := llm.New(cfg, log)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			// Progress goes to stdout normally, to stderr with --json so
			// stdout carries only the final object.
			progress := stdout
			if asJSON {
				progress = stderr
			}
			obs := refine.Observer{
				OnStart: func(r *refine.Result) {
					fmt.Fprintf(progress, "Refinement %s: %s in template %q, up to %d attempts (model %s)\n",
						r.ID, r.Language, r.Template, r.MaxAttempts, cfg.Model)
				},
				OnAttempt: func(a *refine.Attempt) { printAttempt(progress, a, ro.MaxAttempts) },
			}
			res, runErr := refine.New(gen, refine.NewExecutor(c, log), log).Run(cmd.Context(), ro, obs)
			if asJSON {
				if res == nil {
					res = &refine.Result{ID: ro.ID, Status: refine.StatusFailed, Attempts: []*refine.Attempt{}}
				}
				if runErr != nil && res.Error == "" {
					res.Error = runErr.Error()
				}
				if err := writeJSON(stdout, res); err != nil {
					return err
				}
				if runErr != nil {
					fmt.Fprintln(stderr, "Error:", runErr)
				}
				if !res.Success {
					exit(1)
				}
				return nil
			}
			if runErr != nil {
				return runErr
			}
			if res.Success {
				fmt.Fprintf(stdout, "\nSucceeded after %d attempt(s); %d+%d tokens; sandbox cost $%.6f. Final code:\n\n%s",
					len(res.Attempts), res.Tokens.InputTokens, res.Tokens.OutputTokens, res.SandboxCostUSD, res.Code)
				return nil
			}
			fmt.Fprintf(stdout, "\nFailed: %s\nLast code:\n\n%s", res.Error, res.Code)
			exit(1)
			return nil
		},
	}
	opts.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&ro.Template, "template", "t", refine.DefaultTemplate, "template of the sandboxes that run the code")
	f.IntVarP(&ro.MaxAttempts, "max-attempts", "n", refine.DefaultMaxAttempts, "give up after this many rounds")
	f.IntVar(&ro.BestOf, "best-of", 1, "candidates generated and run in parallel per round; the first that passes wins")
	f.StringVar(&testFile, "test", "", "file of test code run after the program (same session for Python); it must not fail")
	f.StringVar(&ro.Expect, "expect", "", "regular expression the program's stdout must match")
	f.StringVarP(&ro.Language, "language", "l", "python", "python (code interpreter), bash, javascript, ruby, go or r")
	f.StringVar(&runTO, "run-timeout", "", "bound on one execution (seconds or a duration; default 60s)")
	f.StringVar(&imagesDir, "images-dir", "", "where image results are saved (default ./refinement-<id>, made only if there are images)")
	f.StringVar(&ro.ID, "id", "", "correlation ID (default a fresh ref_...); sandboxes get metadata refinement_id=ID")
	f.StringVar(&llmProvider, "llm-provider", "", "openai or anthropic (default $SBX_LLM_PROVIDER, else guessed from the URL)")
	f.StringVar(&llmURL, "llm-base-url", "", "LLM API base URL (default $SBX_LLM_BASE_URL, else OpenAI's)")
	f.StringVar(&llmKey, "llm-api-key", "", "LLM API key (default $SBX_LLM_API_KEY)")
	f.StringVar(&llmModel, "llm-model", "", "LLM model (default $SBX_LLM_MODEL)")
	f.StringVar(&llmTO, "llm-timeout", "", "bound on one LLM request (default $SBX_LLM_TIMEOUT, else 2m)")
	f.BoolVar(&asJSON, "json", false, "print only one JSON object with every attempt on stdout at the end")
	f.BoolVarP(&verbose, "verbose", "v", false, "log retries and sandbox operations to stderr")
	return cmd
}

func printAttempt(w io.Writer, a *refine.Attempt, maxAttempts int) {
	verdict := "PASSED"
	switch {
	case a.Error != nil:
		verdict = "FAILED " + a.Error.Name + ": " + firstLine(a.Error.Value)
	case a.Validation != "":
		verdict = "REJECTED " + firstLine(a.Validation)
	}
	cand := ""
	if a.Candidate > 0 {
		cand = fmt.Sprintf(" candidate %d", a.Candidate)
	}
	fmt.Fprintf(w, "Attempt %d/%d%s (sandbox %s): %s\n  llm %v, sandbox+run %v, %d+%d tokens, cost $%.7f\n",
		a.Number, maxAttempts, cand, orDash(a.SandboxID), verdict,
		msDur(a.LLMMS), msDur(a.OverheadMS), a.Tokens.InputTokens, a.Tokens.OutputTokens, a.SandboxCostUSD)
	if out := strings.TrimSpace(a.Stdout); out != "" {
		lines := strings.Split(out, "\n")
		if len(lines) > 10 {
			lines = append([]string{fmt.Sprintf("... %d lines omitted", len(lines)-10)}, lines[len(lines)-10:]...)
		}
		fmt.Fprintf(w, "  stdout: %s\n", strings.Join(lines, "\n          "))
	}
	for _, r := range a.Results {
		for _, f := range r.Files {
			fmt.Fprintf(w, "  saved %s\n", f)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func msDur(ms float64) time.Duration {
	return time.Duration(ms * float64(time.Millisecond)).Round(time.Millisecond)
}
