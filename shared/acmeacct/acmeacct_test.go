package acmeacct_test

import (
	"context"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/queue"
)

// TestOneDefaultUnderConcurrentSwitches: however default switches and
// disables interleave, a provider ends with exactly one default, and it is
// an active account.
func TestOneDefaultUnderConcurrentSwitches(t *testing.T) {
	ctx := context.Background()
	p := testenv.New(t)
	svc, _ := p.ACMEAccounts(t, pebbletest.Options{})
	var ids []int64
	for _, email := range []string{"one@example.com", "two@example.com", "three@example.com"} {
		a, err := svc.Create(ctx, 9, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: email})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	if n := p.RunQueued(t, map[string]func(context.Context, queue.Delivery) error{acmeacct.KindRegister: svc.RegisterStep}); n != 3 {
		t.Fatalf("%d registrations ran", n)
	}
	var wg sync.WaitGroup
	for i := range 30 {
		id := ids[i%3]
		wg.Go(func() {
			_, _ = svc.SetDefault(ctx, 9, 1, id)
			_, _ = svc.Disable(ctx, 9, id)
			_, _ = svc.Enable(ctx, 9, id)
		})
	}
	wg.Wait()
	accounts, total, err := svc.List(ctx, 9, acmeacct.Filter{}, 0, 10)
	if err != nil || total != 3 {
		t.Fatal(total, err)
	}
	defaults := 0
	for _, a := range accounts {
		if a.IsDefault {
			defaults++
			if a.Status != acmeacct.StatusActive {
				t.Errorf("default account %d is %s", a.ID, a.Status)
			}
		}
	}
	if defaults != 1 {
		t.Fatalf("%d defaults after concurrent switches: %+v", defaults, accounts)
	}
}
