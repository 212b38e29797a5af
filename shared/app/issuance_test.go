package app_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
)

// TestServerIssuesACertificate is each shape end to end: over HTTP with an
// API key, an ACME account is registered at Pebble, a certificate record
// created and an issue started; the server's worker runs the step machine,
// Pebble validates HTTP-01 against the server's own challenge route, and
// the certificate is revoked. The AWS shape runs on DynamoDB, SQS and KMS
// (moto).
func TestServerIssuesACertificate(t *testing.T) {
	for _, shape := range []config.Shape{config.Local, config.Lambda} {
		t.Run(string(shape), func(t *testing.T) { issueAndRevoke(t, shape) })
	}
}

func issueAndRevoke(t *testing.T, shape config.Shape) {
	s := startLiveServer(t, shape)
	defer s.stop()
	call, waitFor, peb := s.call, s.waitFor, s.pebble

	var acct struct {
		ID     int64
		Status string
	}
	if code := call("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"ops@example.com"}`, &acct); code != 201 {
		t.Fatalf("create account: %d", code)
	}
	waitFor("the account to register", func() bool {
		call("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", acct.ID), "", &acct)
		return acct.Status == "active"
	})
	var cert struct {
		ID       int64
		Status   string
		NotAfter string `json:"not_after"`
	}
	body := fmt.Sprintf(`{"domain_name":"www.local-e2e.test","sans":["www.local-e2e.test","local-e2e.test"],"acct_id":%d,"action":"create","key_algorithm":"ECDSA","policy":"HYBRID"}`, acct.ID)
	if code := call("POST", "/apiv1/me/certificates", body, &cert); code != 201 {
		t.Fatalf("create certificate: %d", code)
	}
	var issue struct {
		ID       int64
		Status   string
		Error    string
		ChainPEM string `json:"certificate_pem"`
	}
	if code := call("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", cert.ID), "", &issue); code != 202 {
		t.Fatalf("start issue: %d", code)
	}
	waitFor("the issue to finish", func() bool {
		var issues []json.RawMessage
		call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", cert.ID), "", &issues)
		if len(issues) == 0 {
			return false
		}
		json.Unmarshal(issues[0], &issue)
		return issue.Status == "issued" || issue.Status == "failed"
	})
	if issue.Status != "issued" {
		t.Fatalf("issue ended %s: %s", issue.Status, issue.Error)
	}
	block, _ := pem.Decode([]byte(issue.ChainPEM))
	if block == nil {
		t.Fatalf("no certificate in the issue: %+v", issue)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "local-e2e.test", Roots: peb.IssuerRoots(t),
		Intermediates: poolOf(t, issue.ChainPEM)}); err != nil {
		t.Fatalf("the issued certificate does not verify: %v", err)
	}
	call("GET", fmt.Sprintf("/apiv1/me/certificates/%d", cert.ID), "", &cert)
	if cert.Status != "issued" || cert.NotAfter == "" {
		t.Fatalf("certificate record after issue: %+v", cert)
	}

	// Revocation at the CA: a bad reason is refused, a good one revokes,
	// a second answers the revoked issue, and the record stops renewing.
	revoke := fmt.Sprintf("/apiv1/me/certificates/%d/revoke", cert.ID)
	if code := call("POST", revoke, `{"reason":7}`, nil); code != 400 {
		t.Fatalf("revoke with reason 7: %d", code)
	}
	if code := call("POST", revoke, `{"reason":1}`, &issue); code != 200 || issue.Status != "revoked" {
		t.Fatalf("revoke: %d %+v", code, issue)
	}
	if code := call("POST", revoke, `{"reason":1}`, &issue); code != 200 || issue.Status != "revoked" {
		t.Fatalf("second revoke: %d %+v", code, issue)
	}
	var revoked struct {
		Status  string
		RenewAt *string `json:"renew_at"`
	}
	call("GET", fmt.Sprintf("/apiv1/me/certificates/%d", cert.ID), "", &revoked)
	if revoked.Status != "revoked" || revoked.RenewAt != nil {
		t.Fatalf("certificate record after revocation: %+v", revoked)
	}
}

func poolOf(t *testing.T, chain string) *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(chain)) {
		t.Fatal("no certificates in the chain")
	}
	return pool
}

// TestIssueSurvivesAWorkerKilledMidStep: a worker takes an issue's step
// message and dies without acknowledging it; the server restarted on the
// same data gets the message back after its visibility timeout and
// finishes the issue.
func TestIssueSurvivesAWorkerKilledMidStep(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peb := pebbletest.Start(t, pebbletest.Options{HTTPPort: ln.Addr().(*net.TCPAddr).Port, DNSServer: pebbletest.StartDNS(t)})
	dir := t.TempDir()
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": dir, "CERTFLEET_LOG_LEVEL": "warn", "CERTFLEET_QUEUE_VISIBILITY": "1s",
			"CERTFLEET_CA_LETSENCRYPT_DIRECTORY": peb.DirectoryURL, "CERTFLEET_CA_ROOTS": peb.RootsPEMFile}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// First life: an active account, a certificate, an issue started; the
	// worker then receives the issue's first step and dies holding it.
	a, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "kill@example.com", Password: "Kill1Worker", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	acct, err := a.ACME.Create(ctx, u.ID, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: "kill@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := a.Queue.Receive(ctx, 1, time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("registration message: %v %v", ds, err)
	}
	if err := a.Steps.Dispatch(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	if err := a.Queue.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	cert, err := a.Certs.Create(ctx, u.ID, certs.NewCertificate{DomainName: "killed.certfleet.test", AcctID: acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	is, err := a.Issuance.Start(ctx, u.ID, cert.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ds, err = a.Queue.Receive(ctx, 1, time.Second); err != nil || len(ds) != 1 {
		t.Fatalf("first step message: %v %v", ds, err)
	}
	a.Close() // killed: the message is neither acknowledged nor retried

	// Second life on the same data.
	b, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- b.Serve(serveCtx, ln) }()
	defer func() { stop(); <-served }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, err := b.Issuance.Get(ctx, u.ID, cert.ID, is.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == "issued" {
			break
		}
		if got.Status == "failed" || time.Now().After(deadline) {
			t.Fatalf("after the restart the issue is %s (%s)", got.Status, got.Error)
		}
	}
}
