package issuance_test

import (
	"context"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/issuance"
)

// TestRecordResult: an issue held at download (its CA unreachable) is
// ended by the worker's uploaded result, exactly as a download would.
func TestRecordResult(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	hold := make(chan struct{})
	r.ca.holdDownloads.Store(&hold)
	defer close(hold)

	r.certs.add(1, issuance.CertSpec{Names: []string{"result.certfleet.test"}, AcctID: 1})
	is, err := r.svc.Start(ctx, userID, 1)
	if err != nil {
		t.Fatal(err)
	}
	at := r.waitFor(t, 1, is.ID, func(is issuance.Issue) bool { return is.Step == issuance.StepDownload })
	if _, err := r.svc.RecordResult(ctx, userID, 1, is.ID, issuance.Result{Status: "done"}); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("unknown status: %v", err)
	}
	if _, err := r.svc.RecordResult(ctx, userID, 1, is.ID, issuance.Result{Status: issuance.StatusIssued, ChainPEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("garbage chain: %v", err)
	}

	// The worker fetched the chain itself and uploads it.
	order, err := r.ca.ACME.GetOrder(ctx, r.acct, at.OrderURL)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := r.ca.ACME.Download(ctx, r.acct, order.CertificateURL, "")
	if err != nil {
		t.Fatal(err)
	}
	res := issuance.Result{Status: issuance.StatusIssued, ChainPEM: string(chain.ChainPEM)}
	got, err := r.svc.RecordResult(ctx, userID, 1, is.ID, res)
	if err != nil || got.Status != issuance.StatusIssued || got.Step != issuance.StepDone {
		t.Fatalf("RecordResult = %+v, %v", got, err)
	}
	if rec := r.certs.get(1); rec.IssueID != is.ID || rec.NotAfter.IsZero() {
		t.Errorf("certificate record after the upload: %+v", rec)
	}
	if again, err := r.svc.RecordResult(ctx, userID, 1, is.ID, res); err != nil || again.ID != is.ID {
		t.Errorf("the same result again = %v", err)
	}
	if _, err := r.svc.RecordResult(ctx, userID, 1, is.ID, issuance.Result{Status: issuance.StatusFailed, Error: "late"}); apperr.CodeOf(err) != apperr.Conflict {
		t.Errorf("a failure after issued: %v", err)
	}

	// Another issue's chain does not fit a new issue's key.
	r.certs.add(2, issuance.CertSpec{Names: []string{"result.certfleet.test"}, AcctID: 1})
	second, err := r.svc.Start(ctx, userID, 2)
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 2, second.ID, func(is issuance.Issue) bool { return is.Step == issuance.StepDownload })
	if _, err := r.svc.RecordResult(ctx, userID, 2, second.ID, res); apperr.CodeOf(err) != apperr.Invalid || !strings.Contains(err.Error(), "key") {
		t.Errorf("someone else's chain: %v", err)
	}
	// A reported failure ends it, with the worker's reason and an event.
	failed, err := r.svc.RecordResult(ctx, userID, 2, second.ID, issuance.Result{Status: issuance.StatusFailed, Error: "the CA is down"})
	if err != nil || failed.Status != issuance.StatusFailed || !strings.Contains(failed.Error, "the CA is down") {
		t.Fatalf("reported failure = %+v, %v", failed, err)
	}
	log, _ := events.New(r.parts.Store).After(ctx, userID, "", 0)
	if len(log) != 2 || log[0].Type != events.Issued || log[1].Type != events.Failed {
		t.Errorf("events %+v", log)
	}
	if _, err := r.svc.RecordResult(ctx, userID, 3, 99, res); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("unknown issue: %v", err)
	}
}

func TestServeAnswer(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	token := "tok_0123456789abcdef"
	ka := token + ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
	if err := r.svc.ServeAnswer(ctx, issuance.MethodHTTP01, issuance.Presentation{Token: token, KeyAuth: "x"}); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("bad key authorization: %v", err)
	}
	if err := r.svc.ServeAnswer(ctx, issuance.MethodHTTP01, issuance.Presentation{Token: token, KeyAuth: ka}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.svc.KeyAuthorization(ctx, token); err != nil || got != ka {
		t.Errorf("served %q, %v", got, err)
	}
	if err := r.svc.WithdrawAnswer(ctx, issuance.MethodHTTP01, issuance.Presentation{Token: token}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.KeyAuthorization(ctx, token); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("after stop: %v", err)
	}

	p := issuance.Presentation{Domain: "alpn.certfleet.test", KeyAuth: ka}
	if err := r.svc.ServeAnswer(ctx, issuance.MethodTLSALPN01, issuance.Presentation{Domain: "Bad..Name", KeyAuth: ka}); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("bad domain: %v", err)
	}
	if err := r.svc.ServeAnswer(ctx, issuance.MethodTLSALPN01, p); err != nil {
		t.Fatal(err)
	}
	if got, err := r.svc.TLSALPNKeyAuthorization(ctx, p.Domain); err != nil || got != ka {
		t.Errorf("tls-alpn-01 served %q, %v", got, err)
	}
	// Withdrawing someone else's answer leaves the current one.
	other := p
	other.KeyAuth = "other_0123456789abcdef.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
	if err := r.svc.WithdrawAnswer(ctx, issuance.MethodTLSALPN01, other); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.TLSALPNKeyAuthorization(ctx, p.Domain); err != nil {
		t.Errorf("a stale stop removed the answer: %v", err)
	}
	if err := r.svc.WithdrawAnswer(ctx, issuance.MethodTLSALPN01, issuance.Presentation{Domain: p.Domain}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.TLSALPNKeyAuthorization(ctx, p.Domain); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("after stop: %v", err)
	}
	if err := r.svc.ServeAnswer(ctx, issuance.MethodDNS01Provider, p); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("dns-01 through the responders: %v", err)
	}
}
