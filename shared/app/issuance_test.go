package app_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"testing"

	"github.com/certfleet/certfleet/shared/config"
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
