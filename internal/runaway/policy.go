// Package runaway finds sandboxes that run too long, spin the CPU or sit
// idle, and kills or pauses them. Each detection is recorded as a
// sandbox.runaway.detected event before the action, whose kill/pause event
// then carries the reason "runaway".
//
// A policy is one line, e.g. the seed's "kill anything older than 10
// minutes":
//
//	sbx serve --runaway 'max-lifetime=10m action=kill'
//	sbx serve --runaway 'template=code-interpreter cpu=95% cpu-for=5m action=pause'
//	sbx serve --runaway 'team=ci idle=15m action=kill'
package runaway

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Actions.
const (
	ActionKill  = "kill"
	ActionPause = "pause"
)

// Reason is the kill_reason / pause_reason of runaway actions.
const Reason = "runaway"

// Policy is one runaway rule. Zero fields are not checked; at least one of
// MaxLifetime, CPUFor and IdleFor is set.
type Policy struct {
	Team        string        // team ID or name; "" = every team
	Template    string        // template ID; "" = every template
	MaxLifetime time.Duration // since creation (paused time included)
	CPUPercent  float64       // sustained CPU use, percent of the allocated vCPUs
	CPUFor      time.Duration // ... for this long
	IdleFor     time.Duration // CPU below IdlePercent for this long
	IdlePercent float64       // default 1 %
	Action      string        // kill (default) or pause
}

// String renders p in ParsePolicy's syntax.
func (p Policy) String() string {
	var parts []string
	add := func(k, v string) { parts = append(parts, k+"="+v) }
	if p.Team != "" {
		add("team", p.Team)
	}
	if p.Template != "" {
		add("template", p.Template)
	}
	if p.MaxLifetime > 0 {
		add("max-lifetime", p.MaxLifetime.String())
	}
	if p.CPUFor > 0 {
		add("cpu", strconv.FormatFloat(p.CPUPercent, 'g', -1, 64)+"%")
		add("cpu-for", p.CPUFor.String())
	}
	if p.IdleFor > 0 {
		add("idle", p.IdleFor.String())
		add("idle-cpu", strconv.FormatFloat(p.IdlePercent, 'g', -1, 64)+"%")
	}
	add("action", p.Action)
	return strings.Join(parts, " ")
}

const syntax = "want space-separated key=value pairs: max-lifetime=10m, cpu=95%, cpu-for=5m, idle=15m, idle-cpu=1%, team=T, template=T, action=kill|pause; e.g. 'max-lifetime=10m action=kill'"

// ParsePolicy parses one policy line (see the package doc).
func ParsePolicy(s string) (Policy, error) {
	p := Policy{Action: ActionKill, IdlePercent: 1}
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	if len(fields) == 0 {
		return p, fmt.Errorf("empty runaway policy: %s", syntax)
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" {
			return p, fmt.Errorf("runaway policy %q: %q is not key=value; %s", s, f, syntax)
		}
		var err error
		switch strings.ToLower(k) {
		case "team":
			p.Team = v
		case "template":
			p.Template = v
		case "max-lifetime", "lifetime":
			p.MaxLifetime, err = duration(v)
		case "cpu":
			p.CPUPercent, err = percent(v)
		case "cpu-for":
			p.CPUFor, err = duration(v)
		case "idle":
			p.IdleFor, err = duration(v)
		case "idle-cpu":
			p.IdlePercent, err = percent(v)
		case "action":
			if v != ActionKill && v != ActionPause {
				err = fmt.Errorf("use kill or pause")
			}
			p.Action = v
		default:
			return p, fmt.Errorf("runaway policy %q: unknown key %q; %s", s, k, syntax)
		}
		if err != nil {
			return p, fmt.Errorf("runaway policy %q: %s=%s: %w", s, k, v, err)
		}
	}
	if p.CPUPercent > 0 && p.CPUFor == 0 {
		p.CPUFor = time.Minute
	}
	if p.CPUFor > 0 && p.CPUPercent == 0 {
		return p, fmt.Errorf("runaway policy %q: cpu-for needs cpu=PERCENT (e.g. cpu=95%%)", s)
	}
	if p.MaxLifetime == 0 && p.CPUFor == 0 && p.IdleFor == 0 {
		return p, fmt.Errorf("runaway policy %q checks nothing: set max-lifetime, cpu (with cpu-for) or idle", s)
	}
	return p, nil
}

// duration accepts Go durations (90s, 10m, 1h30m) and bare seconds.
func duration(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("must be > 0")
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration like 90s, 10m or 1h")
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be > 0")
	}
	return d, nil
}

func percent(v string) (float64, error) {
	n, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || n <= 0 || n > 100 {
		return 0, fmt.Errorf("want a percentage between 0 and 100, like 95%%")
	}
	return n, nil
}
