package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/queue"
)

func localConfig(t *testing.T, dir string) config.Config {
	t.Helper()
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": dir, "CERTFLEET_QUEUE_VISIBILITY": "1s",
			"CERTFLEET_SHUTDOWN_TIMEOUT": "10s", "CERTFLEET_LOG_LEVEL": "warn"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestLocalFirstRunAndRestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	cfg := localConfig(t, dir)
	a, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(cfg.MasterKeyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v, mode %v", err, info.Mode())
	}
	encCtx := map[string]string{"test": "restart"}
	sealed, err := a.Sealer.Seal(ctx, []byte("account key"), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Queue.Send(ctx, queue.Message{Kind: "test.kept", Body: []byte("{}")}, 0); err != nil {
		t.Fatal(err)
	}

	// A second process on the same data directory is refused while the
	// first holds it.
	if _, err := app.Local(ctx, cfg); err == nil || !strings.Contains(err.Error(), "another certfleet") {
		t.Fatalf("second open of a busy data file: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := b.Sealer.Open(ctx, sealed, encCtx)
	if err != nil || string(plain) != "account key" {
		t.Fatalf("after restart the sealed secret opens to %q, %v", plain, err)
	}
	got, err := b.Queue.Receive(ctx, 10, time.Second)
	if err != nil || len(got) != 1 || got[0].Kind != "test.kept" {
		t.Fatalf("queued message after restart: %v, %v", got, err)
	}
	b.Close()

	// An existing data file whose master key is gone is refused, never
	// given a fresh key.
	if err := os.Remove(cfg.MasterKeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Local(ctx, cfg); !errors.Is(err, keys.ErrNoMasterKey) {
		t.Fatalf("missing master key: %v", err)
	}
	if _, err := os.Stat(cfg.MasterKeyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new master key was created for an existing data file")
	}
}

func TestServeAnswersAndShutsDownGracefully(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.Local(ctx, localConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	started := make(chan struct{})
	release := make(chan struct{})
	finished := make(chan bool, 1)
	a.Steps.Register("test.slow", func(ctx context.Context, m queue.Delivery) error {
		close(started)
		<-release
		finished <- ctx.Err() == nil
		return nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Data map[string]string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body.Data["store"] != "ok" || body.Data["queue"] != "ok" || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("health: %d %v", resp.StatusCode, body)
	}

	if _, err := a.Queue.Send(ctx, queue.Message{Kind: "test.slow"}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker loop did not run the step")
	}
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) while a step was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/health"); err == nil {
		t.Fatal("the server still accepts requests after shutdown began")
	}
	close(release)
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the step finished")
	}
	if !<-finished {
		t.Fatal("the in-flight step saw a cancelled context")
	}
	// The step finished, so its message was acknowledged: nothing comes
	// back after the visibility timeout.
	got, err := a.Queue.Receive(context.Background(), 10, 1500*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("finished step's message redelivered: %v, %v", got, err)
	}
}

func TestLocalJobsRun(t *testing.T) {
	ctx := context.Background()
	a, err := app.Local(ctx, localConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var names []string
	for _, j := range a.Jobs() {
		names = append(names, j.Name)
		if err := j.Run(ctx); err != nil {
			t.Errorf("job %s: %v", j.Name, err)
		}
	}
	if strings.Join(names, ",") != "renewal-scan,dead-letter-watch,purge-expired" {
		t.Fatalf("local jobs = %v", names)
	}
}

// TestCADirectoryOverridesCoverEveryBuiltin keeps config's list of
// overridable providers in step with acmeacct's built-ins.
func TestCADirectoryOverridesCoverEveryBuiltin(t *testing.T) {
	var names []string
	for _, p := range acmeacct.Builtins {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != strings.Join(config.CAProviders, ",") {
		t.Fatalf("acmeacct.Builtins %v != config.CAProviders %v", names, config.CAProviders)
	}
}
