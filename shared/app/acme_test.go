package app_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestLocalServerRegistersAnACMEAccount runs the local server against
// Pebble configured through the documented variables, and registers an
// account through the seed 004 routes: the HTTP route queues the step and
// the server's own worker loop completes it.
func TestLocalServerRegistersAnACMEAccount(t *testing.T) {
	peb := pebbletest.Start(t, pebbletest.Options{})
	dir := t.TempDir()
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": dir, "CERTFLEET_LOG_LEVEL": "warn",
			"CERTFLEET_CA_LETSENCRYPT_DIRECTORY": peb.DirectoryURL, "CERTFLEET_CA_ROOTS": peb.RootsPEMFile}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "ops@example.com", Password: "Local1Server", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	_, token, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "acme",
		Permissions: []identity.Permission{{ObType: "acme_accounts", ObID: "*", Actions: []string{"read", "create"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	post := func(path, body string) *http.Response {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/api/v1/acme/account/create", `{"providerName":"letsencrypt","email":"ops@example.com"}`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest("GET", base+"/api/v1/acme/accounts", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Data struct {
				Items []struct {
					Status     string
					AccountURL string `json:"accountUrl"`
				}
			}
		}
		json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if len(env.Data.Items) == 1 && env.Data.Items[0].Status == "active" {
			if !strings.HasPrefix(env.Data.Items[0].AccountURL, strings.TrimSuffix(peb.DirectoryURL, "/dir")) {
				t.Fatalf("account URL %q is not Pebble's", env.Data.Items[0].AccountURL)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the account did not become active: %+v", env.Data.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(fmt.Errorf("serve: %w", err))
	}
}
