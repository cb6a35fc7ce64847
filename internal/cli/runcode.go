package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newRunCodeCmd() *cobra.Command { return runCodeCmd(os.Exit) }

// runCodeCmd takes exit so tests can see the exit status without dying.
func runCodeCmd(exit func(int)) *cobra.Command {
	var (
		opts                                  clientOptions
		template, language, outDir, sandboxID string
		timeout                               string
		envs                                  []string
		asJSON, keep                          bool
	)
	cmd := &cobra.Command{
		Use:   "run-code [FILE|-]",
		Short: "Run code in a code-interpreter sandbox and save its charts",
		Long: `Run a file (or stdin) in a sandbox's code interpreter, as E2B's run_code does:
stdout and stderr stream here, the value of the last expression is printed, and
image results (PNG, JPEG, SVG) are saved as files in --out-dir.

Without --sandbox a sandbox is created from --template and killed afterwards;
with --sandbox ID an existing one is reused (and kept), so state persists
between calls. The exit status is 1 when the code raised an error.`,
		Example: `  eval "$(sbx env)"
  echo 'print(6*7)' | sbx run-code
  sbx run-code plot.py --out-dir charts/
  sbx run-code --language bash - <<< 'uname -a'
  id=$(sbx sandbox create --template code-interpreter)
  sbx run-code --sandbox $id <<< 'x = 1'; sbx run-code --sandbox $id <<< 'x + 1'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := readCode(cmd.InOrStdin(), args)
			if err != nil {
				return err
			}
			d, ev, err := commandInputs(timeout, envs)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()

			var s *sdk.Sandbox
			if sandboxID != "" {
				if s, err = c.Connect(ctx, sandboxID, sdk.ConnectOptions{}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(stderr, "Creating a %s sandbox...\n", template)
				if s, err = c.Create(ctx, sdk.CreateOptions{Template: template}); err != nil {
					return err
				}
				if !keep {
					defer func() {
						kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
						defer cancel()
						_ = s.Kill(kctx)
					}()
				} else {
					fmt.Fprintf(stderr, "Sandbox %s is kept running.\n", s.ID)
				}
			}

			run := &sdk.RunCodeOptions{Language: language, Envs: ev, Timeout: d}
			if !asJSON {
				run.OnStdout = func(m sdk.OutputMessage) { io.WriteString(stdout, m.Line) }
				run.OnStderr = func(m sdk.OutputMessage) { io.WriteString(stderr, m.Line) }
			}
			exec, err := s.RunCode(ctx, code, run)
			if err != nil {
				return err
			}
			files, err := saveResultFiles(outDir, exec.Results)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(stdout, runCodeOutput{SandboxID: s.ID, Execution: exec, Files: files}); err != nil {
					return err
				}
			} else {
				if t := exec.Text(); t != "" {
					fmt.Fprintln(stdout, t)
				}
				for _, f := range files {
					fmt.Fprintf(stderr, "Saved %s\n", f)
				}
				if exec.Error != nil {
					if exec.Error.Traceback != "" {
						fmt.Fprintln(stderr, exec.Error.Traceback)
					} else {
						fmt.Fprintf(stderr, "%s: %s\n", exec.Error.Name, exec.Error.Value)
					}
				}
			}
			if exec.Error != nil {
				exit(1)
			}
			return nil
		},
	}
	opts.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&template, "template", "t", "code-interpreter", "template of the sandbox to create")
	f.StringVarP(&language, "language", "l", "", "language: python (default), bash, or another installed kernel")
	f.StringVar(&sandboxID, "sandbox", "", "run in this existing sandbox instead of creating one (it is not killed)")
	f.StringVarP(&outDir, "out-dir", "o", ".", "directory for image results (result-N.png, .jpeg, .svg)")
	f.StringArrayVarP(&envs, "env", "e", nil, "environment variable KEY=VALUE for this run only (repeatable)")
	f.StringVar(&timeout, "timeout", "", "stop the code after this long (seconds or a duration; default no limit)")
	f.BoolVar(&asJSON, "json", false, "print the whole execution (logs, results, error, saved files) as JSON")
	f.BoolVar(&keep, "keep", false, "do not kill the sandbox this command created")
	return cmd
}

type runCodeOutput struct {
	SandboxID string         `json:"sandbox_id"`
	Execution *sdk.Execution `json:"execution"`
	Files     []string       `json:"files"`
}

func readCode(stdin io.Reader, args []string) (string, error) {
	if len(args) == 0 || args[0] == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return "", fmt.Errorf("read code from stdin: %w", err)
		}
		return string(b), nil
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return "", fmt.Errorf("read code: %w (pass a file, or '-' to read stdin)", err)
	}
	return string(b), nil
}

// saveResultFiles writes every PNG, JPEG and SVG result to dir and returns
// the paths, numbered in result order.
func saveResultFiles(dir string, results []sdk.Result) ([]string, error) {
	files := []string{}
	for i, r := range results {
		for _, img := range []struct {
			ext, data string
			b64       bool
		}{{"png", r.PNG, true}, {"jpeg", r.JPEG, true}, {"svg", r.SVG, false}} {
			if img.data == "" {
				continue
			}
			data := []byte(img.data)
			if img.b64 {
				var err error
				if data, err = base64.StdEncoding.DecodeString(img.data); err != nil {
					return files, fmt.Errorf("result %d: %s is not valid base64: %w", i+1, img.ext, err)
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return files, fmt.Errorf("--out-dir: %w", err)
			}
			p := filepath.Join(dir, fmt.Sprintf("result-%d.%s", i+1, img.ext))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return files, fmt.Errorf("save result: %w", err)
			}
			files = append(files, p)
		}
	}
	return files, nil
}
