package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newBenchCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running sbx server through the SDK",
		Example: `  eval "$(sbx env)"
  sbx bench tti --n 50 --concurrency 1,20`,
	}
	opts.register(cmd)
	cmd.AddCommand(newBenchTTICmd(&opts))
	cmd.AddCommand(newBenchTemplatesCmd(&opts, "templates"))
	return cmd
}

func newBenchTTICmd(opts *clientOptions) *cobra.Command {
	var (
		template, levels string
		n                int
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "tti",
		Short: "Time to interactive: from the create request to the first command's result",
		Long: `For each concurrency level C, create N sandboxes in waves of C started at the same
moment. Each sample is the time from sending the create request to receiving the
result of 'echo ok' in that sandbox, measured in this process over HTTP exactly as an
SDK user sees it. Sandboxes are killed after each wave, outside the timed path.
Prints p50/p95/p99/min/max per level, with the create and command parts apart.`,
		Example: `  sbx bench tti
  sbx bench tti --template base --n 50 --concurrency 1,20
  sbx bench tti --n 20 --concurrency 1 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conc, err := parseLevels(levels)
			if err != nil {
				return err
			}
			if n < 1 {
				return fmt.Errorf("invalid --n %d: need at least 1 sample", n)
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			var reports []ttiReport
			for _, level := range conc {
				fmt.Fprintf(cmd.ErrOrStderr(), "tti: %d sandboxes, %d at once, template %s\n", n, level, template)
				r := runTTI(cmd.Context(), c, template, n, level, cmd.ErrOrStderr())
				reports = append(reports, r)
				if err := cmd.Context().Err(); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), reports)
			}
			return printTTI(cmd.OutOrStdout(), reports)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&template, "template", "t", sdk.DefaultTemplate, "template to start")
	f.IntVarP(&n, "n", "n", 50, "sandboxes per concurrency level")
	f.StringVarP(&levels, "concurrency", "c", "1,20", "comma-separated concurrency levels; 1 = sequential")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for p := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("invalid --concurrency %q: want positive integers separated by commas, e.g. 1,20", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// ttiSample is one sandbox's timing.
type ttiSample struct {
	total, create time.Duration
	err           error
}

// ttiStats summarises durations in milliseconds.
type ttiStats struct {
	P50  float64 `json:"p50Ms"`
	P95  float64 `json:"p95Ms"`
	P99  float64 `json:"p99Ms"`
	Min  float64 `json:"minMs"`
	Max  float64 `json:"maxMs"`
	Mean float64 `json:"meanMs"`
}

type ttiReport struct {
	Template    string   `json:"template"`
	Concurrency int      `json:"concurrency"`
	Samples     int      `json:"samples"`
	Errors      int      `json:"errors"`
	FirstError  string   `json:"firstError,omitempty"`
	TTI         ttiStats `json:"tti"`
	Create      ttiStats `json:"create"`
	Command     ttiStats `json:"firstCommand"`
}

func runTTI(ctx context.Context, c *sdk.Client, template string, n, level int, progress io.Writer) ttiReport {
	var samples []ttiSample
	for done := 0; done < n && ctx.Err() == nil; {
		wave := min(level, n-done)
		samples = append(samples, ttiWave(ctx, c, template, wave, progress)...)
		done += wave
		fmt.Fprintf(progress, "\r  %d/%d", done, n)
	}
	fmt.Fprintln(progress)
	return summarise(template, level, samples)
}

// ttiWave starts count sandboxes at once and kills them once all measured,
// so teardown never overlaps the timed path.
func ttiWave(ctx context.Context, c *sdk.Client, template string, count int, progress io.Writer) []ttiSample {
	samples := make([]ttiSample, count)
	sandboxes := make([]*sdk.Sandbox, count)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range count {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			s, err := c.Create(ctx, sdk.CreateOptions{Template: template, Timeout: 2 * time.Minute})
			created := time.Since(t0)
			if err != nil {
				samples[i].err = err
				return
			}
			sandboxes[i] = s
			res, err := s.Commands.Run(ctx, "echo ok", sdk.RunOptions{})
			total := time.Since(t0)
			if err == nil && strings.TrimSpace(res.Stdout) != "ok" {
				err = fmt.Errorf("echo ok printed %q", res.Stdout)
			}
			samples[i] = ttiSample{total: total, create: created, err: err}
		})
	}
	close(start)
	wg.Wait()
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for _, s := range sandboxes {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if err := s.Kill(kctx); err != nil && !sdk.IsNotFound(err) {
				fmt.Fprintf(progress, "\nwarning: kill %s: %v\n", s.ID, err)
			}
		})
	}
	wg.Wait()
	return samples
}

func summarise(template string, level int, samples []ttiSample) ttiReport {
	r := ttiReport{Template: template, Concurrency: level, Samples: len(samples)}
	var tti, create, command []time.Duration
	for _, s := range samples {
		if s.err != nil {
			if r.Errors == 0 {
				r.FirstError = s.err.Error()
			}
			r.Errors++
			continue
		}
		tti = append(tti, s.total)
		create = append(create, s.create)
		command = append(command, s.total-s.create)
	}
	r.TTI, r.Create, r.Command = stats(tti), stats(create), stats(command)
	return r
}

// stats uses nearest-rank percentiles over the sorted samples.
func stats(ds []time.Duration) ttiStats {
	if len(ds) == 0 {
		return ttiStats{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return ttiStats{
		P50: ms(rank(0.50)), P95: ms(rank(0.95)), P99: ms(rank(0.99)),
		Min: ms(ds[0]), Max: ms(ds[len(ds)-1]), Mean: ms(sum / time.Duration(len(ds))),
	}
}

func printTTI(w io.Writer, reports []ttiReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\tok\terrors\tp50 ms\tp95 ms\tp99 ms\tmin ms\tmax ms\tcreate p50\tcommand p50\t")
	var errs []error
	for _, r := range reports {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", r.Concurrency, r.Samples-r.Errors, r.Errors,
			r.TTI.P50, r.TTI.P95, r.TTI.P99, r.TTI.Min, r.TTI.Max, r.Create.P50, r.Command.P50)
		if r.FirstError != "" {
			errs = append(errs, fmt.Errorf("concurrency %d: %d of %d failed, first: %s", r.Concurrency, r.Errors, r.Samples, r.FirstError))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}
