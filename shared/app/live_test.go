package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
)

// liveServer is the server of one shape serving on a loopback port (the
// local shape over bbolt, or the AWS shape over DynamoDB, SQS and KMS on
// moto), with Pebble standing in for Let's Encrypt (through the documented
// variables) and validating HTTP-01 against the server itself, and a user
// with an API key that holds every permission.
type liveServer struct {
	t      *testing.T
	app    *app.App
	pebble *pebbletest.Pebble
	base   string
	token  string
	stop   func()
}

func startLiveServer(t *testing.T, shape config.Shape) *liveServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peb := pebbletest.Start(t, pebbletest.Options{HTTPPort: ln.Addr().(*net.TCPAddr).Port, DNSServer: pebbletest.StartDNS(t)})
	ctx, cancel := context.WithCancel(context.Background())
	var a *app.App
	if shape == config.Lambda {
		lambdaEnv(t)
		t.Setenv("CERTFLEET_CA_LETSENCRYPT_DIRECTORY", peb.DirectoryURL)
		t.Setenv("CERTFLEET_CA_ROOTS", peb.RootsPEMFile)
		// moto does not serialise concurrent writes: one step at a time.
		t.Setenv("CERTFLEET_WORKER_CONCURRENCY", "1")
		a, err = app.Lambda(ctx)
	} else {
		dir := t.TempDir()
		cfg, cerr := config.Load(config.Local, func(k string) string {
			return map[string]string{"CERTFLEET_DATA": dir, "CERTFLEET_LOG_LEVEL": "warn",
				"CERTFLEET_CA_LETSENCRYPT_DIRECTORY": peb.DirectoryURL, "CERTFLEET_CA_ROOTS": peb.RootsPEMFile}[k]
		})
		if cerr != nil {
			t.Fatal(cerr)
		}
		a, err = app.Local(ctx, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "ops@example.com", Password: "Local1Server", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	var all []identity.Permission
	for _, s := range identity.Catalog {
		all = append(all, identity.Permission{ObType: s.ObType, ObID: "*", Actions: s.Actions})
	}
	_, token, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "ops", Permissions: all})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	s := &liveServer{t: t, app: a, pebble: peb, base: "http://" + ln.Addr().String(), token: token}
	s.stop = func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		a.Close()
	}
	return s
}

// call sends a request with the API key and decodes the envelope's data
// (either dialect's: "data" is where both put it) into into.
func (s *liveServer) call(method, path, body string, into any) int {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct{ Data json.RawMessage }
	if err := json.Unmarshal(raw, &env); err == nil && into != nil {
		json.Unmarshal(env.Data, into)
	}
	if resp.StatusCode >= 400 {
		s.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// waitFor polls done for up to 60 s (SQS delays have whole seconds).
func (s *liveServer) waitFor(what string, done func() bool) {
	s.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !done(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
	}
}
