package issuance_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/renewal"
)

func renewalCheck(t *testing.T, svc *issuance.Service, certID int64) error {
	t.Helper()
	body, _ := json.Marshal(map[string]int64{"user_id": userID, "certificate_id": certID})
	return svc.RenewalCheck(context.Background(), queue.Delivery{Message: queue.Message{Kind: issuance.KindRenewalCheck, Body: body}, Attempt: 1})
}

// TestRenewalByARI: a renewal check plans in the CA's ARI window; when the
// CA moves the window to now (Pebble's management API), the next check
// renews, and the new order replaces the old certificate.
func TestRenewalByARI(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	svc, sent := r.manual(issuance.Config{})
	r.certs.add(1, issuance.CertSpec{Names: []string{"ari.certfleet.test"}, AcctID: 1})
	first, err := svc.Start(ctx, userID, 1)
	if err != nil {
		t.Fatal(err)
	}
	sent.runAll(ctx, svc)
	first, _ = svc.Get(ctx, userID, 1, first.ID)
	if first.Status != issuance.StatusIssued {
		t.Fatalf("first issue %s %s", first.Status, first.Error)
	}
	issued := r.certs.get(1)
	if issued.CheckAt.After(time.Now().Add(issuance.ARICheckEvery)) || issued.CheckAt.After(issued.RenewAt) {
		t.Errorf("next check %s, renewal %s: want a check within %s and no later than the renewal", issued.CheckAt, issued.RenewAt, issuance.ARICheckEvery)
	}

	// Not due yet: the check records the plan and starts nothing.
	if err := renewalCheck(t, svc, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := sent.take(); ok {
		t.Fatal("a check before the window started a renewal")
	}
	// The CA asks for renewal now.
	r.pebble.SetRenewalWindow(t, []byte(first.ChainPEM), time.Now().Add(-time.Hour), time.Now().Add(-time.Minute), "")
	if err := renewalCheck(t, svc, 1); err != nil {
		t.Fatal(err)
	}
	sent.runAll(ctx, svc)
	hist, _, err := svc.History(ctx, userID, 1, 0, "")
	if err != nil || len(hist) != 2 {
		t.Fatalf("history after the renewal check: %d issues, %v", len(hist), err)
	}
	renewed := hist[0]
	if renewed.Status != issuance.StatusIssued || renewed.Renews != first.ID {
		t.Fatalf("renewal %s %q renews %d", renewed.Status, renewed.Error, renewed.Renews)
	}
	want, _ := issuance.ARICertID(parseChain(t, first.ChainPEM)[0])
	if renewed.Replaces != want {
		t.Errorf("the renewal's order replaces %q, want %q", renewed.Replaces, want)
	}
	log, _ := events.New(r.parts.Store).After(ctx, userID, "", 0)
	if len(log) != 2 || log[1].Type != events.Renewed {
		t.Errorf("events %+v", log)
	}
	// A certificate that was never issued is nothing to renew.
	r.certs.add(2, issuance.CertSpec{Names: []string{"never.certfleet.test"}, AcctID: 1})
	if err := renewalCheck(t, svc, 2); err != nil {
		t.Errorf("check of a never issued certificate: %v", err)
	}
}

// TestBudget: Start counts against the provider's weekly budget, refuses
// over it with when it frees up, and a failed issue gives its count back.
func TestBudget(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	budget, err := renewal.NewBudget(r.parts.Store, renewal.BudgetConfig{PerNameSet: 2})
	if err != nil {
		t.Fatal(err)
	}
	svc, sent := r.manual(issuance.Config{Budgets: map[string]*renewal.Budget{"letsencrypt": budget}})
	spec := issuance.CertSpec{Names: []string{"budget.certfleet.test"}, AcctID: 1, Provider: "letsencrypt"}
	r.certs.add(1, spec)
	r.certs.add(3, spec)
	// Certificate 2's issue will fail: its account does not exist.
	r.certs.add(2, issuance.CertSpec{Names: spec.Names, AcctID: 99, Provider: "letsencrypt"})
	// Another provider's certificates are not counted.
	r.certs.add(4, issuance.CertSpec{Names: spec.Names, AcctID: 1, Provider: "google"})
	for _, id := range []int64{1, 2, 4} {
		if _, err := svc.Start(ctx, userID, id); err != nil {
			t.Fatalf("Start %d: %v", id, err)
		}
	}
	_, err = svc.Start(ctx, userID, 3)
	if apperr.CodeOf(err) != apperr.RateLimit || !strings.Contains(err.Error(), "budget.certfleet.test") || !strings.Contains(err.Error(), "after") {
		t.Fatalf("third certificate for one name set: %v", err)
	}
	// Certificate 2's issue fails: its count comes back.
	sent.runAll(ctx, svc)
	if is, err := svc.Start(ctx, userID, 3); err != nil {
		t.Fatalf("after a failed issue gave its count back: %v", err)
	} else if is.Status != issuance.StatusPending {
		t.Fatalf("issue %+v", is)
	}
}

// TestExpiringAndRetryPace: a certificate close to expiry is announced
// once, and a started renewal is looked at again only after
// RenewalRetryAfter (a failing renewal is retried hourly, not every scan).
func TestExpiringAndRetryPace(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	svc, sent := r.manual(issuance.Config{})
	r.certs.add(1, issuance.CertSpec{Names: []string{"expiring.certfleet.test"}, AcctID: 1})
	if _, err := svc.Start(ctx, userID, 1); err != nil {
		t.Fatal(err)
	}
	sent.runAll(ctx, svc)

	// 80 days on, the 90-day certificate has not been renewed.
	later := time.Now().Add(80 * 24 * time.Hour)
	old, _ := r.manual(issuance.Config{Now: func() time.Time { return later }})
	for range 2 {
		if err := renewalCheck(t, old, 1); err != nil {
			t.Fatal(err)
		}
	}
	log, _ := events.New(r.parts.Store).After(ctx, userID, "", 0)
	expiring := 0
	for _, ev := range log {
		if ev.Type == events.Expiring {
			expiring++
		}
	}
	if expiring != 1 {
		t.Errorf("%d expiring events for one certificate checked twice", expiring)
	}
	if got := r.certs.get(1).CheckAt; got.Sub(later.Add(issuance.RenewalRetryAfter)).Abs() > time.Second {
		t.Errorf("next check %s after starting a renewal, want %s", got, later.Add(issuance.RenewalRetryAfter))
	}
}
