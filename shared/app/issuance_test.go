package app_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/issuance"
)

// TestServerIssuesEveryWay is each shape end to end over HTTP with an API
// key: an ACME account is registered at Pebble, and the server's worker
// issues, all at once, a single name over HTTP-01 (ECDSA), a SAN
// certificate over HTTP-01 (RSA), a wildcard with its apex over DNS-01 by
// delegation (the CNAME in pebble-challtestsrv, the TXT written through
// lego's exec provider) and a name over TLS-ALPN-01 (the server's own
// responder). Then a renewal whose window the CA moved to now (Pebble's
// management API) orders with ARI "replaces", an export downloads, and a
// revocation revokes. The AWS shape runs on DynamoDB, SQS and KMS (moto).
func TestServerIssuesEveryWay(t *testing.T) {
	for _, shape := range []config.Shape{config.Local, config.Lambda} {
		t.Run(string(shape), func(t *testing.T) { issueEveryWay(t, shape) })
	}
}

type issueReply struct {
	ID       int64
	Status   string
	Error    string
	Renews   int64
	Replaces string
	ChainPEM string `json:"certificate_pem"`
}

func issueEveryWay(t *testing.T, shape config.Shape) {
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

	type want struct {
		names []string
		body  string
		key   func(crypto.PublicKey) bool
	}
	isECDSA := func(k crypto.PublicKey) bool { _, ok := k.(*ecdsa.PublicKey); return ok }
	cases := map[string]want{
		"http-01": {[]string{"one.e2e.test"},
			`"domain_name":"one.e2e.test","key_algorithm":"ECDSA","policy":"HYBRID"`, isECDSA},
		"http-01 SAN RSA": {[]string{"www.san.e2e.test", "san.e2e.test"},
			`"domain_name":"www.san.e2e.test","sans":["www.san.e2e.test","san.e2e.test"],"key_algorithm":"RSA","key_size":2048`,
			func(k crypto.PublicKey) bool { r, ok := k.(*rsa.PublicKey); return ok && r.N.BitLen() == 2048 }},
		"dns-01 delegation": {[]string{"*.wild.e2e.test", "wild.e2e.test"},
			`"domain_name":"*.wild.e2e.test","sans":["*.wild.e2e.test","wild.e2e.test"],"validation":{"method":"dns-01-delegation"}`, isECDSA},
		"tls-alpn-01": {[]string{"alpn.e2e.test"},
			`"domain_name":"alpn.e2e.test","challenge_type":"tls-alpn-01"`, isECDSA},
	}
	certIDs := map[string]int64{}
	for name, c := range cases {
		var cert struct {
			ID         int64
			Validation struct {
				Method     string
				Delegation []struct{ Name, CNAME string }
			}
		}
		if code := call("POST", "/apiv1/me/certificates", fmt.Sprintf(`{%s,"acct_id":%d,"action":"create"}`, c.body, acct.ID), &cert); code != 201 {
			t.Fatalf("%s: create certificate: %d", name, code)
		}
		if cert.Validation.Method == "dns-01-delegation" {
			// The one CNAME the owner adds at their DNS host.
			if len(cert.Validation.Delegation) != 1 || cert.Validation.Delegation[0].Name != "_acme-challenge.wild.e2e.test" ||
				!strings.HasSuffix(cert.Validation.Delegation[0].CNAME, "."+delegationZone) {
				t.Fatalf("delegation CNAMEs %+v", cert.Validation.Delegation)
			}
			s.dns.SetCNAME(t, cert.Validation.Delegation[0].Name, cert.Validation.Delegation[0].CNAME)
		}
		certIDs[name] = cert.ID
		if code := call("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", cert.ID), "", nil); code != 202 {
			t.Fatalf("%s: start issue: %d", name, code)
		}
	}
	latest := func(certID int64) issueReply {
		var issues []issueReply
		call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", &issues)
		if len(issues) == 0 {
			return issueReply{}
		}
		return issues[0]
	}
	leaves := map[string]*x509.Certificate{}
	for name, c := range cases {
		var is issueReply
		waitFor(name+" to finish", func() bool {
			is = latest(certIDs[name])
			return is.Status == "issued" || is.Status == "failed"
		})
		if is.Status != "issued" {
			t.Fatalf("%s: issue ended %s: %s", name, is.Status, is.Error)
		}
		leaf := verifyLeaf(t, peb, is.ChainPEM, c.names)
		if !c.key(leaf.PublicKey) {
			t.Errorf("%s: key %T", name, leaf.PublicKey)
		}
		leaves[name] = leaf
	}

	// Renewal: the CA moves the window of the HTTP-01 certificate to now;
	// the renewal check renews it, replacing the old certificate.
	first := latest(certIDs["http-01"])
	peb.SetRenewalWindow(t, []byte(first.ChainPEM), time.Now().Add(-time.Hour), time.Now().Add(-time.Minute), "")
	if err := s.app.Issuance.QueueRenewalCheck(context.Background(), s.userID, certIDs["http-01"]); err != nil {
		t.Fatal(err)
	}
	var renewed issueReply
	waitFor("the renewal", func() bool {
		renewed = latest(certIDs["http-01"])
		return renewed.ID != first.ID && (renewed.Status == "issued" || renewed.Status == "failed")
	})
	wantReplaces, _ := issuance.ARICertID(leaves["http-01"])
	if renewed.Status != "issued" || renewed.Renews != first.ID || renewed.Replaces != wantReplaces {
		t.Fatalf("renewal %+v; want issued, renewing %d and replacing %s", renewed, first.ID, wantReplaces)
	}

	// Export without the key (the certificate does not allow it).
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/apiv1/me/certificates/%d/export?format=zip&include_key=false", s.base, certIDs["dns-01 delegation"]), nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	zipped, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped))); resp.StatusCode != 200 || err != nil || len(zr.File) != 3 {
		t.Fatalf("export: %d %v", resp.StatusCode, err)
	}
	if code := call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/export", certIDs["dns-01 delegation"]), "", nil); code != 403 {
		t.Fatalf("export with the key, not allowed: %d", code)
	}

	// Revocation at the CA: a bad reason is refused, a good one revokes,
	// a second answers the revoked issue, and the record stops renewing.
	san := certIDs["http-01 SAN RSA"]
	revoke := fmt.Sprintf("/apiv1/me/certificates/%d/revoke", san)
	var is issueReply
	if code := call("POST", revoke, `{"reason":7}`, nil); code != 400 {
		t.Fatalf("revoke with reason 7: %d", code)
	}
	if code := call("POST", revoke, `{"reason":1}`, &is); code != 200 || is.Status != "revoked" {
		t.Fatalf("revoke: %d %+v", code, is)
	}
	if code := call("POST", revoke, `{"reason":1}`, &is); code != 200 || is.Status != "revoked" {
		t.Fatalf("second revoke: %d %+v", code, is)
	}
	var revoked struct {
		Status  string
		RenewAt *string `json:"renew_at"`
	}
	call("GET", fmt.Sprintf("/apiv1/me/certificates/%d", san), "", &revoked)
	if revoked.Status != "revoked" || revoked.RenewAt != nil {
		t.Fatalf("certificate record after revocation: %+v", revoked)
	}

	// Every change is in the user's event log.
	log, err := events.New(s.app.Store).After(context.Background(), s.userID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range log {
		count[ev.Type]++
	}
	if count[events.Issued] != 4 || count[events.Renewed] != 1 || count[events.Revoked] != 1 || len(log) != 6 {
		t.Errorf("event log %v", count)
	}
}

// verifyLeaf parses an issued chain and checks its leaf names exactly
// names and chains to Pebble's root.
func verifyLeaf(t *testing.T, peb *pebbletest.Pebble, chainPEM string, names []string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(chainPEM))
	if block == nil {
		t.Fatalf("no certificate in %q", chainPEM)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(names))) {
		t.Errorf("leaf names %q, want %q", leaf.DNSNames, names)
	}
	host := strings.Replace(names[0], "*", "x", 1)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: peb.IssuerRoots(t), Intermediates: poolOf(t, chainPEM)}); err != nil {
		t.Errorf("the certificate for %s does not verify: %v", names[0], err)
	}
	return leaf
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
