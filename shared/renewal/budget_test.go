package renewal_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/ratelimit"
	"github.com/certfleet/certfleet/shared/renewal"
	"github.com/certfleet/certfleet/shared/store"
)

// budgetRig is a Budget over a real bbolt store with a clock frozen at the
// test's start (the store expires counters by real time, so the clock
// stays at real time; the week cannot change under a test).
type budgetRig struct {
	st  store.Store
	now time.Time
	// weekEnd is the next Monday 00:00 UTC after now, worked out here
	// apart from the Budget's own week arithmetic.
	weekEnd time.Time
}

func newBudgetRig(t *testing.T) *budgetRig {
	t.Helper()
	now := time.Now().UTC()
	days := (int(time.Monday) - int(now.Weekday()) + 7) % 7
	if days == 0 {
		days = 7
	}
	y, m, d := now.Date()
	return &budgetRig{st: testenv.New(t).Store, now: now, weekEnd: time.Date(y, m, d+days, 0, 0, 0, 0, time.UTC)}
}

func (r *budgetRig) budget(t *testing.T, cfg renewal.BudgetConfig) *renewal.Budget {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return r.now }
	}
	b, err := renewal.NewBudget(r.st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func requireRateLimit(t *testing.T, err error, wantMessage string) {
	t.Helper()
	if apperr.CodeOf(err) != apperr.RateLimit {
		t.Fatalf("error %v, want %s", err, apperr.RateLimit)
	}
	if got := apperr.MessageOf(err); got != wantMessage {
		t.Errorf("message %q,\nwant    %q", got, wantMessage)
	}
}

func TestBudgetRegisteredDomain(t *testing.T) {
	for name, want := range map[string]string{
		"example.com":           "example.com",
		"www.example.com":       "example.com",
		"a.b.c.example.com":     "example.com",
		"*.example.com":         "example.com",
		"*.www.example.com":     "example.com",
		"www.example.co.uk":     "example.co.uk",
		"co.uk":                 "co.uk",
		"com":                   "com",
		"alice.github.io":       "alice.github.io", // a private-section suffix
		"github.io":             "github.io",
		"192.0.2.7":             "192.0.2.7",
		"2001:db8:0:0:0:0:0:1":  "2001:db8::1",
		"::ffff:192.0.2.7":      "192.0.2.7",
		"localhost":             "localhost",
		"host.certfleet.test":   "certfleet.test",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got := renewal.RegisteredDomain(name); got != want {
			t.Errorf("RegisteredDomain(%q) = %q, want %q", name, got, want)
		}
	}
}

// 16 reservations at once for one set of names, against a limit of 5:
// exactly 5 get through, and the 11 refused leave nothing counted.
func TestBudgetConcurrentNameSet(t *testing.T) {
	r := newBudgetRig(t)
	b := r.budget(t, renewal.BudgetConfig{PerNameSet: 5})
	ctx := context.Background()
	names := []string{"www.example.com", "example.com"}

	race := func() ([]renewal.Reservation, []error) {
		var (
			mu   sync.Mutex
			ok   []renewal.Reservation
			errs []error
			wg   sync.WaitGroup
		)
		for range 16 {
			wg.Go(func() {
				res, err := b.Reserve(ctx, names)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else {
					ok = append(ok, res)
				}
			})
		}
		wg.Wait()
		return ok, errs
	}
	want := fmt.Sprintf("the names example.com, www.example.com have had 5 certificates this week, Let's Encrypt's limit for one set of names; the next one can be requested after %s",
		r.weekEnd.Format(time.RFC3339))

	ok, errs := race()
	if len(ok) != 5 || len(errs) != 11 {
		t.Fatalf("%d reserved, %d refused; want 5 and 11 (errors: %v)", len(ok), len(errs), errs)
	}
	for _, err := range errs {
		requireRateLimit(t, err, want)
	}
	// The same names in another order, case and with a final dot are the
	// same set.
	_, err := b.Reserve(ctx, []string{"EXAMPLE.com.", "www.example.com", "example.com"})
	requireRateLimit(t, err, want)

	for _, res := range ok {
		if err := b.Release(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	// Had a refusal stayed counted, fewer than 5 would get through now.
	ok, errs = race()
	if len(ok) != 5 || len(errs) != 11 {
		t.Fatalf("after release: %d reserved, %d refused; want 5 and 11", len(ok), len(errs))
	}
}

func TestBudgetPerRegisteredDomain(t *testing.T) {
	r := newBudgetRig(t)
	b := r.budget(t, renewal.BudgetConfig{PerRegisteredDomain: 3})
	ctx := context.Background()

	for _, n := range []string{"a.example.com", "*.b.example.com", "example.com"} {
		if _, err := b.Reserve(ctx, []string{n}); err != nil {
			t.Fatalf("Reserve %s: %v", n, err)
		}
	}
	// The fourth certificate under example.com is refused, with another
	// registered domain in the same request.
	_, err := b.Reserve(ctx, []string{"x.example.org", "d.example.com"})
	requireRateLimit(t, err, fmt.Sprintf("example.com has had 3 certificates this week, Let's Encrypt's limit; the next one can be requested after %s",
		r.weekEnd.Format(time.RFC3339)))

	// example.org was not counted by the refused request: it has all 3.
	for _, n := range []string{"x.example.org", "y.example.org", "*.example.org"} {
		if _, err := b.Reserve(ctx, []string{n}); err != nil {
			t.Fatalf("Reserve %s: %v", n, err)
		}
	}
	_, err = b.Reserve(ctx, []string{"z.example.org"})
	requireRateLimit(t, err, fmt.Sprintf("example.org has had 3 certificates this week, Let's Encrypt's limit; the next one can be requested after %s",
		r.weekEnd.Format(time.RFC3339)))

	// Other registered domains, IP addresses and public suffixes count
	// apart.
	for _, names := range [][]string{{"example.net"}, {"192.0.2.1"}, {"alice.github.io"}, {"bob.github.io"}} {
		if _, err := b.Reserve(ctx, names); err != nil {
			t.Errorf("Reserve %v: %v", names, err)
		}
	}

	// A budget of another CA counts apart, with its name in refusals.
	other := r.budget(t, renewal.BudgetConfig{CA: "Example CA", PerRegisteredDomain: 1})
	if _, err := other.Reserve(ctx, []string{"e.example.com"}); err != nil {
		t.Fatalf("another CA: %v", err)
	}
	_, err = other.Reserve(ctx, []string{"f.example.com"})
	requireRateLimit(t, err, fmt.Sprintf("example.com has had 1 certificate this week, Example CA's limit; the next one can be requested after %s",
		r.weekEnd.Format(time.RFC3339)))
}

func TestBudgetRelease(t *testing.T) {
	r := newBudgetRig(t)
	b := r.budget(t, renewal.BudgetConfig{PerNameSet: 1})
	ctx := context.Background()
	names := []string{"release.example.com"}

	res, err := b.Reserve(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" || res.Ends != r.weekEnd || len(res.Counters) != 2 {
		t.Errorf("reservation %+v", res)
	}
	if _, err := b.Reserve(ctx, names); apperr.CodeOf(err) != apperr.RateLimit {
		t.Fatalf("second reservation: %v, want a refusal", err)
	}
	// Released twice, given back once.
	for range 2 {
		if err := b.Release(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	res2, err := b.Reserve(ctx, names)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if _, err := b.Reserve(ctx, names); apperr.CodeOf(err) != apperr.RateLimit {
		t.Fatalf("a double release gave back twice: %v", err)
	}
	// The zero reservation gives back nothing.
	if err := b.Release(ctx, renewal.Reservation{}); err != nil {
		t.Fatal(err)
	}
	// Once the week is over, a release gives back nothing (the counters
	// are the old week's).
	later := r.budget(t, renewal.BudgetConfig{PerNameSet: 1, Now: func() time.Time { return r.weekEnd }})
	if err := later.Release(ctx, res2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, names); apperr.CodeOf(err) != apperr.RateLimit {
		t.Fatalf("a release after the week gave back: %v", err)
	}
}

func TestBudgetInvalidNames(t *testing.T) {
	r := newBudgetRig(t)
	b := r.budget(t, renewal.BudgetConfig{})
	for _, names := range [][]string{nil, {}, {""}, {"a.example.com", " "}, {"."}, {"*."}} {
		if _, err := b.Reserve(context.Background(), names); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("Reserve(%q) = %v, want %s", names, err, apperr.Invalid)
		}
	}
	if _, err := renewal.NewBudget(nil, renewal.BudgetConfig{}); err == nil {
		t.Error("NewBudget without a store: no error")
	}
}

// The budget shares the ratelimit table with ratelimit.Limiter without
// sharing a key: a limiter's hits do not count against the budget.
func TestBudgetApartFromRateLimiters(t *testing.T) {
	r := newBudgetRig(t)
	b := r.budget(t, renewal.BudgetConfig{PerRegisteredDomain: 1, PerNameSet: 1})
	ctx := context.Background()
	if renewal.BudgetTable != ratelimit.Table {
		t.Fatalf("BudgetTable %q, ratelimit.Table %q", renewal.BudgetTable, ratelimit.Table)
	}
	for _, name := range []string{"budget", "budget:Let's Encrypt:domain:example.com", "requests"} {
		l := ratelimit.New(r.st, name, 1, 7*24*time.Hour, func() time.Time { return r.now })
		for range 3 {
			if _, err := l.Hit(ctx, "example.com"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := b.Reserve(ctx, []string{"example.com"}); err != nil {
		t.Fatalf("Reserve after limiter hits: %v", err)
	}
}

// A store failure is no refusal: it is an internal error.
func TestBudgetStoreFailure(t *testing.T) {
	r := newBudgetRig(t)
	b, err := renewal.NewBudget(failingStore{r.st}, renewal.BudgetConfig{Now: func() time.Time { return r.now }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Reserve(context.Background(), []string{"example.com"})
	if err == nil || apperr.CodeOf(err) != apperr.Internal || !strings.Contains(err.Error(), "store down") {
		t.Errorf("Reserve over a failing store: %v", err)
	}
}

type failingStore struct{ store.Store }

func (failingStore) Increment(context.Context, store.Key, int64, time.Time) (int64, error) {
	return 0, errors.New("store down")
}
