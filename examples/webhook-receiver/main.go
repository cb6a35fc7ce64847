// Command webhook-receiver is the seed's webhook receiver, in Go, against
// sbx: it verifies both signatures of each delivery, counts sandbox
// creations per team per day (alerting over a daily limit), and reports,
// and optionally kills, sandboxes still running after a deadline.
//
// sbx sends a sandbox's events in the order they happened, one at a time
// (its killed after its created is delivered or has failed for good);
// different sandboxes' events arrive in any order, and any event may come
// twice (at least once), so the receiver dedupes on webhook-id.
//
//	go run ./examples/webhook-receiver --secret s3cret --port 8788 --daily-limit 100 --runaway-after 10m --kill
//	sbx webhook create --name receiver --url http://127.0.0.1:8788/webhooks/e2b --secret s3cret
//	curl localhost:8788/stats
//
// With --kill it calls DELETE $E2B_API_URL/sandboxes/{id} with $E2B_API_KEY.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type apiKiller struct{ base, key string }

func (k apiKiller) Kill(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, strings.TrimRight(k.base, "/")+"/sandboxes/"+id, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", k.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("kill sandbox %s: HTTP %d", id, resp.StatusCode)
	}
	return nil
}

func main() {
	secret := flag.String("secret", os.Getenv("WEBHOOK_SECRET"), "signing secret of the webhook (or $WEBHOOK_SECRET)")
	port := flag.Int("port", 8788, "port to listen on")
	limit := flag.Int("daily-limit", 100, "alert when a team creates more sandboxes than this in a UTC day")
	runaway := flag.Duration("runaway-after", 10*time.Minute, "report sandboxes still running after this long")
	kill := flag.Bool("kill", false, "kill runaway sandboxes through the API ($E2B_API_URL, $E2B_API_KEY)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *secret == "" {
		fmt.Fprintln(os.Stderr, "webhook-receiver: --secret is required (the signatureSecret you registered)")
		os.Exit(2)
	}
	rc := NewReceiver(*secret, *limit, *runaway, log)
	if *kill {
		rc.Killer = apiKiller{base: os.Getenv("E2B_API_URL"), key: os.Getenv("E2B_API_KEY")}
	}
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/e2b", rc)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rc.Snapshot())
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Info("receiving webhooks", "url", "http://"+srv.Addr+"/webhooks/e2b")
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
