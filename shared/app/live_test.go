package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/dns01"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testproc"
)

// liveServer is the server of one shape serving on a loopback port (the
// local shape over bbolt, or the AWS shape over DynamoDB, SQS and KMS on
// moto), with Pebble standing in for Let's Encrypt (through the documented
// variables) and validating HTTP-01 against the server itself, and a user
// with an API key that holds every permission.
type liveServer struct {
	t      testing.TB
	app    *app.App
	pebble *pebbletest.Pebble
	// dns is pebble-challtestsrv: Pebble's resolver (every name is
	// 127.0.0.1) and the delegation zone's DNS, written through lego's
	// exec provider.
	dns    *pebbletest.ChallTestSrv
	base   string
	token  string
	userID int64
	stop   func()
}

// delegationZone is the live server's dns-01-delegation zone.
const delegationZone = "delegation.e2e.test"

func startLiveServer(t testing.TB, shape config.Shape) *liveServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dns := pebbletest.StartChallTestSrv(t)
	for k, v := range dns.ExecEnv(t) { // lego's exec provider writes the delegation zone
		t.Setenv(k, v)
	}
	alpnPort, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	peb := pebbletest.Start(t, pebbletest.Options{HTTPPort: ln.Addr().(*net.TCPAddr).Port, TLSPort: alpnPort, DNSServer: dns.DNSAddr})
	// The rate limit is the maximum: the benchmarks poll every millisecond.
	// A CA call that hangs is abandoned after 5 s (30 s by default), so
	// its step is retried well within waitFor's 60 s: twice a live test
	// took 31 s and 62 s with one call hanging.
	env := map[string]string{"CERTFLEET_LOG_LEVEL": "warn", "CERTFLEET_RATE_LIMIT": "100000", "CERTFLEET_CA_TIMEOUT": "5s",
		"CERTFLEET_CA_LETSENCRYPT_DIRECTORY": peb.DirectoryURL, "CERTFLEET_CA_ROOTS": peb.RootsPEMFile,
		"CERTFLEET_DELEGATION_ZONE": delegationZone, "CERTFLEET_DELEGATION_PROVIDER": "exec",
		"CERTFLEET_DNS_RESOLVERS": dns.DNSAddr, "CERTFLEET_TLSALPN_ADDR": "127.0.0.1:" + strconv.Itoa(alpnPort)}
	ctx, cancel := context.WithCancel(context.Background())
	var a *app.App
	if shape == config.Lambda {
		lambdaEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		// moto does not serialise concurrent writes: one step at a time.
		t.Setenv("CERTFLEET_WORKER_CONCURRENCY", "1")
		a, err = app.Lambda(ctx, app.WithDNS01(dns01.Solvers))
	} else {
		env["CERTFLEET_DATA"] = t.TempDir()
		cfg, cerr := config.Load(config.Local, func(k string) string { return env[k] })
		if cerr != nil {
			t.Fatal(cerr)
		}
		a, err = app.Local(ctx, cfg, app.WithDNS01(dns01.Solvers))
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
	s := &liveServer{t: t, app: a, pebble: peb, dns: dns, base: "http://" + ln.Addr().String(), token: token, userID: u.ID}
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

// activeAccount creates an ACME account at Pebble and waits until it is
// registered.
func (s *liveServer) activeAccount() int64 {
	s.t.Helper()
	var acct struct {
		ID     int64
		Status string
	}
	if code := s.call("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"ops@example.com"}`, &acct); code != 201 {
		s.t.Fatalf("create account: %d", code)
	}
	s.waitFor("the account to register", func() bool {
		s.call("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", acct.ID), "", &acct)
		return acct.Status == "active"
	})
	return acct.ID
}

// createCertificate creates a certificate for domain on the account;
// extra is more members of the request (`,"key":value`).
func (s *liveServer) createCertificate(acctID int64, domain, extra string) int64 {
	s.t.Helper()
	var cert struct{ ID int64 }
	if code := s.call("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":%q,"acct_id":%d%s}`, domain, acctID, extra), &cert); code != 201 {
		s.t.Fatalf("create %s: %d", domain, code)
	}
	return cert.ID
}

// issue starts an issue of the certificate (a renewal when it was issued
// before), waits until it is done and returns its id.
func (s *liveServer) issue(certID int64) int64 {
	s.t.Helper()
	var started struct{ ID int64 }
	if code := s.call("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", &started); code != 202 {
		s.t.Fatalf("start issue: %d", code)
	}
	s.waitFor("the issue", func() bool {
		var issues []struct {
			ID           int64
			Status, Step string
		}
		s.call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", &issues)
		if len(issues) > 0 && issues[0].ID == started.ID && issues[0].Status == "failed" {
			s.t.Fatalf("issue %d failed", started.ID)
		}
		return len(issues) > 0 && issues[0].ID == started.ID && issues[0].Step == "done"
	})
	return started.ID
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
