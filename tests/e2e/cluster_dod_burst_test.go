package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/sdk"
)

// burstAndKillAPI sends a burst of creates through api replica a and
// kills it with SIGKILL once a few have succeeded, while others are in
// flight. Every create must end, with a sandbox or an error (none hangs
// to its deadline); once the nodes settled, every container, network
// namespace and address lease on a live node belongs to a running row,
// every running row there has its container, and every sandbox a client
// was given still runs. Sandboxes whose answer died with the replica are
// counted: a node that saw its caller leave kills what it made
// (create_abandoned); one whose answer was already sent keeps it, listed
// by its metadata, until its timeout.
func (c *testCluster) burstAndKillAPI(t *testing.T, db *sqldb.DB, a int) {
	t.Helper()
	n := dodEnvInt(t, "SBX_DOD_BURST", 24)
	client := c.apis[a].Client(t)
	type outcome struct {
		id  string
		err error
		in  time.Duration
	}
	outs := make([]outcome, n)
	var ok atomic.Int32
	killNow := make(chan struct{})
	var once sync.Once
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
				t0 := time.Now()
				s, err := client.Create(ctx, sdk.CreateOptions{Timeout: 20 * time.Minute,
					Metadata: map[string]string{"dod": "burst", "n": strconv.Itoa(i)}})
				cancel()
				outs[i].in, outs[i].err = time.Since(t0), err
				if err == nil {
					outs[i].id = s.ID
					if ok.Add(1) >= 3 {
						once.Do(func() { close(killNow) })
					}
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- i:
			case <-t.Context().Done():
				return
			}
		}
	}()
	select {
	case <-killNow:
	case <-time.After(2 * time.Minute):
		t.Fatalf("no 3 creates succeeded through api-%d within 2 minutes", a+1)
	}
	c.apis[a].Stop(syscall.SIGKILL)
	wg.Wait()

	given := map[string]bool{}
	var failed []string
	for i, o := range outs {
		switch {
		case o.err == nil:
			given[o.id] = true
		case errors.Is(o.err, context.DeadlineExceeded):
			t.Errorf("burst create %d hung until its deadline (%v) after api-%d died: %v", i, o.in, a+1, o.err)
		default:
			failed = append(failed, fmt.Sprintf("%d: %v", i, o.err))
		}
	}
	t.Logf("burst of %d creates through api-%d, kill -9 after 3 succeeded: %d succeeded, %d failed with an error (e.g. %v)",
		n, a+1, len(given), len(failed), first3(failed))

	live := c.liveNodes()
	dodWait(t, 90*time.Second, "the live nodes' containers, namespaces and leases to match their running rows", func() (bool, string) {
		diff := c.leaks(t, db, live)
		return len(diff) == 0, strings.Join(diff, "; ")
	})
	rows := c.rows(t, db)
	reasons := map[string]int{}
	unknown := 0
	for id, r := range rows {
		if !strings.Contains(r.metadata, `"burst"`) {
			continue
		}
		if given[id] {
			if r.state != "running" {
				t.Errorf("sandbox %s, given to a client, is %s (%s); want running", id, r.state, r.reason)
			}
			continue
		}
		if r.state == "running" {
			unknown++
		} else {
			reasons[r.state+"/"+r.reason]++
		}
	}
	t.Logf("burst rows nobody was given: %d still running (answer lost after the node replied; listed, end at their timeout), "+
		"ended: %v", unknown, reasons)

	// The surviving replica still creates.
	s, err := c.api.Client(t).Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("create through api-1 after api-%d died: %v", a+1, err)
	}
	if _, err := s.Commands.Run(opCtx(t), "true", sdk.RunOptions{}); err != nil {
		t.Errorf("command in %s after api-%d died: %v", s.ID, a+1, err)
	}
}

// liveNodes lists the indexes of the nodes whose process runs.
func (c *testCluster) liveNodes() []int {
	var live []int
	for i, n := range c.nodes {
		if n.Pid() > 0 && syscall.Kill(n.Pid(), 0) == nil {
			live = append(live, i)
		}
	}
	return live
}

// leaks compares, on each live node, its containers (crun), network
// namespaces (<data dir>/netns) and the machine's address leases naming
// them against the node's running rows, both ways, and looks for cgroups
// left by the sandboxes it recorded killed.
func (c *testCluster) leaks(t *testing.T, db *sqldb.DB, live []int) []string {
	t.Helper()
	rows := c.rows(t, db)
	leases := leaseOwners(t)
	var diff []string
	for _, i := range live {
		name := fmt.Sprintf("node-%d", i+1)
		want := map[string]bool{}
		for id, r := range rows {
			if r.node == name && r.state == "running" {
				want[id] = true
			}
		}
		crun, err := crunIDs(t, c.nodes[i].DataDir)
		if err != nil { // a container being deleted meanwhile: look again
			return []string{fmt.Sprintf("%s: %v", name, err)}
		}
		for id, st := range crun {
			if !want[id] {
				diff = append(diff, fmt.Sprintf("%s: container %s (%s) without a running row (%s %s)", name, id, st, rows[id].state, rows[id].reason))
			}
		}
		for id := range want {
			if _, ok := crun[id]; !ok {
				diff = append(diff, fmt.Sprintf("%s: running row %s without a container", name, id))
			}
		}
		nsDir := filepath.Join(c.nodes[i].DataDir, "netns")
		ents, _ := os.ReadDir(nsDir)
		for _, e := range ents {
			if !want[e.Name()] {
				diff = append(diff, fmt.Sprintf("%s: network namespace %s without a running row", name, e.Name()))
			}
		}
		for addr, owner := range leases {
			if id, ok := strings.CutPrefix(owner, nsDir+"/"); ok && !want[id] {
				if _, err := os.Stat(owner); err == nil { // a lease whose namespace is gone is free (network/lease.go)
					diff = append(diff, fmt.Sprintf("%s: address %s leased to %s, which has no running row", name, addr, id))
				}
			}
		}
	}
	// Cgroups are machine-wide (/sbx/<id> under each hierarchy): none may
	// remain of a sandbox a live node recorded killed.
	for id, r := range rows {
		if r.state != "killed" || !slices.ContainsFunc(live, func(i int) bool { return r.node == fmt.Sprintf("node-%d", i+1) }) {
			continue
		}
		for _, h := range []string{"", "memory", "pids", "unified"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, "sbx", id)); err == nil {
				diff = append(diff, fmt.Sprintf("%s: cgroup %s of killed sandbox %s (%s)", r.node, filepath.Join(h, "sbx", id), id, r.reason))
			}
		}
	}
	slices.Sort(diff)
	return diff
}

// leaseOwners reads the machine's address leases (network.DefaultLeaseDir):
// address → the network namespace holding it.
func leaseOwners(t *testing.T) map[string]string {
	t.Helper()
	const dir = "/run/sbx/ipam"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			out[e.Name()] = string(b)
		}
	}
	return out
}

// crunIDs lists the containers in a node's crun state dir with their
// status; unlike Server.CrunStates it returns crun's error (crun list
// fails while a container it lists is being deleted).
func crunIDs(t *testing.T, dataDir string) (map[string]string, error) {
	root := filepath.Join(dataDir, "runtime", "crun")
	out, err := exec.CommandContext(t.Context(), "crun", "--root", root, "list", "--format", "json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("crun --root %s list: %w", root, err)
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if len(bytes.TrimSpace(out)) > 0 {
		if err := json.Unmarshal(out, &list); err != nil {
			return nil, fmt.Errorf("crun list --format json: %v: %s", err, out)
		}
	}
	states := make(map[string]string, len(list))
	for _, c := range list {
		states[c.ID] = c.Status
	}
	return states, nil
}
