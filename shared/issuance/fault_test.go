package issuance_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/queue"
)

// captureSender keeps the messages sent instead of queueing them, so a
// test delivers them itself.
type captureSender struct {
	mu   sync.Mutex
	msgs []queue.Message
}

func (c *captureSender) Send(_ context.Context, m queue.Message, _ time.Duration) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m.ID = strconv.Itoa(len(c.msgs) + 1)
	c.msgs = append(c.msgs, m)
	return m.ID, nil
}

func (*captureSender) Ping(context.Context) error { return nil }

func (c *captureSender) take() (queue.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.msgs) == 0 {
		return queue.Message{}, false
	}
	m := c.msgs[0]
	c.msgs = c.msgs[1:]
	return m, true
}

// manual returns a service over the rig's parts whose messages are kept
// for the test to deliver (captureSender) instead of the rig's worker;
// cfg's MaxAttempts and Log are set.
func (r *rig) manual(cfg issuance.Config) (*issuance.Service, *captureSender) {
	sent := &captureSender{}
	cfg.MaxAttempts, cfg.Log = 5, r.parts.Log
	return issuance.New(r.parts.Store, r.parts.Sealer, sent, r.ca, fakeAccounts{1: r.acct}, r.certs, cfg), sent
}

// runAll delivers the queued messages to svc, each failed one again
// later, until none is left (a worker without delays).
func (c *captureSender) runAll(ctx context.Context, svc *issuance.Service) {
	for range 2000 {
		m, ok := c.take()
		if !ok {
			return
		}
		handle := svc.Step
		if m.Kind == issuance.KindRenewalCheck {
			handle = svc.RenewalCheck
		}
		if err := handle(ctx, queue.Delivery{Message: m, Attempt: 1}); err != nil {
			_, _ = c.Send(ctx, m, 0)
		}
	}
}

// TestFiveDeliveriesOneOrder: the first step's message delivered five
// times at once (SQS delivers at least once) creates one ACME order, and
// the copies that lost, redelivered later, change nothing.
func TestFiveDeliveriesOneOrder(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	svc, sent := r.manual(issuance.Config{})
	r.certs.add(9, issuance.CertSpec{Names: []string{"five.certfleet.test"}, AcctID: 1})
	is, err := svc.Start(ctx, userID, 9)
	if err != nil {
		t.Fatal(err)
	}
	first, ok := sent.take()
	if !ok {
		t.Fatal("Start queued nothing")
	}
	orders := r.ca.newOrders.Load()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range 5 {
		wg.Go(func() { errs[i] = svc.Step(ctx, queue.Delivery{Message: first, Attempt: i + 1}) })
	}
	wg.Wait()
	if n := r.ca.newOrders.Load() - orders; n != 1 {
		t.Fatalf("five deliveries made %d orders", n)
	}
	// The losers are redelivered, as the queue would; then the machine
	// runs to the end on the messages it queued.
	for i, err := range errs {
		if err != nil {
			if err := svc.Step(ctx, queue.Delivery{Message: first, Attempt: i + 2}); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
		}
	}
	sent.runAll(ctx, svc)
	got, err := svc.Get(ctx, userID, 9, is.ID)
	if err != nil || got.Status != issuance.StatusIssued {
		t.Fatalf("issue = %s %q, %v", got.Status, got.Error, err)
	}
	if n := r.ca.newOrders.Load() - orders; n != 1 {
		t.Errorf("%d orders for one issue", n)
	}
}

// TestLostMessageIsQueuedAgain: an issue whose step message was lost is
// picked up again by the next Start once it is stale.
func TestLostMessageIsQueuedAgain(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	now := time.Now()
	svc, sent := r.manual(issuance.Config{Now: func() time.Time { return now }})
	r.certs.add(5, issuance.CertSpec{Names: []string{"lost.certfleet.test"}, AcctID: 1})
	is, err := svc.Start(ctx, userID, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sent.take(); !ok { // lost
		t.Fatal("Start queued nothing")
	}
	if again, err := svc.Start(ctx, userID, 5); err != nil || again.ID != is.ID {
		t.Fatalf("Start while active = %d, %v", again.ID, err)
	}
	if _, ok := sent.take(); ok {
		t.Fatal("a fresh active issue was queued again")
	}
	now = now.Add(issuance.StaleAfter + time.Minute)
	if again, err := svc.Start(ctx, userID, 5); err != nil || again.ID != is.ID {
		t.Fatalf("Start when stale = %d, %v", again.ID, err)
	}
	sent.runAll(ctx, svc)
	if got, err := svc.Get(ctx, userID, 5, is.ID); err != nil || got.Status != issuance.StatusIssued {
		t.Fatalf("issue = %s %q, %v", got.Status, got.Error, err)
	}
}

// TestAbandonDeadMessage: a step message that failed every delivery
// (the dead-letter queue's) marks its issue failed, once; a stale one
// changes nothing.
func TestAbandonDeadMessage(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	svc, sent := r.manual(issuance.Config{})
	r.certs.add(3, issuance.CertSpec{Names: []string{"dead.certfleet.test"}, AcctID: 1})
	is, err := svc.Start(ctx, userID, 3)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := sent.take()
	// A stale copy: the issue has moved past it.
	if err := svc.Step(ctx, queue.Delivery{Message: first, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Abandon(ctx, queue.Delivery{Message: first, Attempt: 5}); err != nil {
		t.Fatal(err)
	}
	if got, _ := svc.Get(ctx, userID, 3, is.ID); got.Status != issuance.StatusPending {
		t.Fatalf("a stale dead message changed the issue: %s", got.Status)
	}
	current, ok := sent.take()
	if !ok {
		t.Fatal("no step queued after the order")
	}
	if err := svc.Abandon(ctx, queue.Delivery{Message: current, Attempt: 5}); err != nil {
		t.Fatal(err)
	}
	got, _ := svc.Get(ctx, userID, 3, is.ID)
	if got.Status != issuance.StatusFailed || !strings.Contains(got.Error, "every one of 5 deliveries") {
		t.Fatalf("after the dead message: %s %q", got.Status, got.Error)
	}
	if err := svc.Abandon(ctx, queue.Delivery{Message: current, Attempt: 5}); err != nil {
		t.Fatal(err)
	}
}
