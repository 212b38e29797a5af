package renewal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
	"golang.org/x/net/publicsuffix"
)

// Let's Encrypt's limits on new certificates
// (https://letsencrypt.org/docs/rate-limits/), the Budget defaults.
const (
	// DefaultPerRegisteredDomain: new certificates per registered domain
	// per week.
	DefaultPerRegisteredDomain = 50
	// DefaultPerNameSet: new certificates per exact set of names per week.
	DefaultPerNameSet = 5
	// DefaultCA is the CA named in refusals.
	DefaultCA = "Let's Encrypt"
)

// BudgetTable is the table of the budget's counters: the rate limit
// table, which holds expiring fixed-window counters. The budget's
// partition keys all start with "budget:" and hold no "#", while
// ratelimit.Limiter's are "<limiter name>#<key>" ("loginfail#…",
// "requests#…"), so the two never share a key.
const BudgetTable = "ratelimit"

// counterGrace keeps a week's counters a day past the week (clock skew
// between processes and the store).
const counterGrace = 24 * time.Hour

// BudgetConfig configures a Budget; the zero value is Let's Encrypt's.
type BudgetConfig struct {
	// CA names the CA whose limits these are: in refusals ("…, Let's
	// Encrypt's limit") and in the counters' keys, so budgets of
	// different CAs count apart. "" means DefaultCA.
	CA string
	// PerRegisteredDomain and PerNameSet are the weekly limits; zero or
	// less means the default.
	PerRegisteredDomain int
	PerNameSet          int
	// Now is the clock; nil means time.Now. The store expires counters by
	// its own (real) clock, so Now must not run far behind it.
	Now func() time.Time
}

// Budget counts new certificates against a CA's weekly limits before the
// order is placed, so certfleet refuses, with a message saying when it
// will be possible, what the CA would refuse (and possibly count against
// the account) later:
//
//   - at most PerRegisteredDomain new certificates per registered domain
//     (the public suffix plus one label, golang.org/x/net/publicsuffix
//     with the private section, as Let's Encrypt uses it; an IP address,
//     or a name that is itself a public suffix, counts as itself; a
//     wildcard counts under its base name), and
//   - at most PerNameSet per exact set of names (case, order, repeats and
//     a final dot do not matter; "*.a.com" and "a.com" are different
//     names).
//
// Windows are fixed ISO weeks, Monday 00:00 UTC to the next Monday, with
// one counter per registered domain and name set per week (in
// BudgetTable, the week in the sort key, expiring a day after the week).
// That is simpler than Let's Encrypt's own sliding windows and can tell
// exactly when a refused request becomes possible (the next Monday), but
// it is only an approximation: across a week boundary it allows up to
// twice the limit within seven days, which the CA may still refuse (the
// step machine retries a CA's rateLimited answer later).
//
// Every counter update is one atomic store Increment. A reservation takes
// its counters one after another and gives them all back as soon as one
// is over its limit, so concurrent reservations never take more than a
// limit allows; under contention one may be refused while another that
// is refused in turn briefly holds a count (a spurious refusal, never an
// extra certificate). Budget is safe for concurrent use, across
// processes too.
type Budget struct {
	st        store.Store
	ca        string
	perDomain int64
	perSet    int64
	now       func() time.Time
}

// NewBudget returns a budget over st, which must not be nil.
func NewBudget(st store.Store, cfg BudgetConfig) (*Budget, error) {
	if st == nil {
		return nil, errors.New("renewal: budget: no store")
	}
	b := &Budget{st: st, ca: cfg.CA, perDomain: int64(cfg.PerRegisteredDomain), perSet: int64(cfg.PerNameSet), now: cfg.Now}
	if b.ca == "" {
		b.ca = DefaultCA
	}
	if b.perDomain <= 0 {
		b.perDomain = DefaultPerRegisteredDomain
	}
	if b.perSet <= 0 {
		b.perSet = DefaultPerNameSet
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

// Reservation is what Reserve counted: keep it (it is JSON) with the issue
// and hand it to Release if no certificate comes of it.
type Reservation struct {
	// ID names the reservation; "" is the zero Reservation, which
	// Release ignores.
	ID string `json:"id"`
	// Week is the ISO week counted in, "2026-W48".
	Week string `json:"week"`
	// Ends is the end of that week (the next Monday, 00:00 UTC).
	Ends time.Time `json:"ends"`
	// Counters are the partition keys of the counters taken.
	Counters []string `json:"counters"`
}

// Reserve counts one new certificate for names against every registered
// domain they fall under and against their name set, for the current
// week. It returns an apperr.RateLimit naming the first limit reached, the
// limit and when the next certificate can be requested (e.g. "example.com
// has had 50 certificates this week, Let's Encrypt's limit; the next one
// can be requested after 2026-11-30T00:00:00Z"), having given back what it
// counted; apperr.Invalid for no names or an empty name; a plain error
// when the store fails (what was counted is given back if the store
// lets it).
func (b *Budget) Reserve(ctx context.Context, names []string) (Reservation, error) {
	set, err := nameSet(names)
	if err != nil {
		return Reservation{}, err
	}
	now := b.now().UTC()
	_, weekEnd, week := isoWeek(now)
	expires := weekEnd.Add(counterGrace)

	type counter struct {
		pk    string
		limit int64
		what  string // who reached the limit, for the message
		whose string // which limit
	}
	var counters []counter
	var domains []string
	for _, n := range set {
		if d := RegisteredDomain(n); !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	slices.Sort(domains)
	for _, d := range domains {
		counters = append(counters, counter{pk: b.pk("domain", d), limit: b.perDomain, what: d + " has", whose: b.ca + "'s limit"})
	}
	sum := sha256.Sum256([]byte(strings.Join(set, "\n")))
	counters = append(counters, counter{
		pk:    b.pk("names", base64.RawURLEncoding.EncodeToString(sum[:])),
		limit: b.perSet,
		what:  "the names " + listNames(set) + " have",
		whose: b.ca + "'s limit for one set of names",
	})

	res := Reservation{ID: rand.Text(), Week: week, Ends: weekEnd}
	for _, c := range counters {
		n, err := b.st.Increment(ctx, b.key(c.pk, week), 1, expires)
		if err != nil {
			return Reservation{}, errors.Join(fmt.Errorf("renewal: budget: count %s: %w", c.pk, err), b.giveBack(ctx, res))
		}
		res.Counters = append(res.Counters, c.pk)
		if n > c.limit {
			refusal := apperr.New(apperr.RateLimit, "%s had %s this week, %s; the next one can be requested after %s",
				c.what, certificates(c.limit), c.whose, weekEnd.Format(time.RFC3339))
			if err := b.giveBack(ctx, res); err != nil {
				return Reservation{}, errors.Join(refusal, err)
			}
			return Reservation{}, refusal
		}
	}
	// The marker makes Release happen once.
	raw, err := json.Marshal(res)
	if err != nil {
		return Reservation{}, errors.Join(fmt.Errorf("renewal: budget: %w", err), b.giveBack(ctx, res))
	}
	if _, err := b.st.Put(ctx, store.Item{Key: b.key(b.pk("reservation", res.ID), week), Value: raw, ExpiresAt: expires}, store.IfAbsent); err != nil {
		return Reservation{}, errors.Join(fmt.Errorf("renewal: budget: record reservation: %w", err), b.giveBack(ctx, res))
	}
	return res, nil
}

// Release gives back what res counted, when no certificate came of it
// (an issue that failed before the CA issued). It is idempotent: a
// reservation is given back once however often Release is called, and
// the zero Reservation, or one of a week already over, gives back
// nothing. Errors are the store's; a Release that failed half-way leaves
// counts taken (a budget only ever errs on the safe side) and, retried,
// does nothing more.
func (b *Budget) Release(ctx context.Context, res Reservation) error {
	if res.ID == "" || !b.now().Before(res.Ends) {
		return nil
	}
	err := b.st.Delete(ctx, b.key(b.pk("reservation", res.ID), res.Week), store.IfExists)
	if errors.Is(err, store.ErrConditionFailed) {
		return nil // released before (or expired)
	}
	if err != nil {
		return fmt.Errorf("renewal: budget: release: %w", err)
	}
	return b.giveBack(ctx, res)
}

// giveBack takes one off each counter of res, even when ctx has ended.
func (b *Budget) giveBack(ctx context.Context, res Reservation) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, pk := range res.Counters {
		if _, err := b.st.Increment(ctx, b.key(pk, res.Week), -1, res.Ends.Add(counterGrace)); err != nil {
			errs = append(errs, fmt.Errorf("renewal: budget: give back %s: %w", pk, err))
		}
	}
	return errors.Join(errs...)
}

func (b *Budget) pk(kind, id string) string { return "budget:" + b.ca + ":" + kind + ":" + id }

func (b *Budget) key(pk, week string) store.Key {
	return store.Key{Table: BudgetTable, PK: pk, SK: week}
}

// RegisteredDomain is what Budget counts name under: its public suffix
// plus one label ("www.example.co.uk" → "example.co.uk"), a wildcard's
// base name's ("*.example.com" → "example.com"); an IP address, a name
// that is itself a public suffix ("co.uk", "github.io") and a name the
// list cannot place count as themselves. name is taken as given
// (Reserve lower-cases it first).
func RegisteredDomain(name string) string {
	name = strings.TrimPrefix(name, "*.")
	if addr, err := netip.ParseAddr(name); err == nil {
		return addr.Unmap().String()
	}
	if d, err := publicsuffix.EffectiveTLDPlusOne(name); err == nil {
		return d
	}
	return name
}

// nameSet normalizes names: trimmed, lower case, without a final dot, IP
// addresses in canonical form, sorted, each once.
func nameSet(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, apperr.InvalidField("names", "at least one name is needed")
	}
	set := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if n == "" || n == "*" {
			return nil, apperr.InvalidField("names", "empty name")
		}
		if addr, err := netip.ParseAddr(n); err == nil {
			n = addr.Unmap().String()
		}
		set = append(set, n)
	}
	slices.Sort(set)
	return slices.Compact(set), nil
}

func certificates(n int64) string {
	if n == 1 {
		return "1 certificate"
	}
	return fmt.Sprintf("%d certificates", n)
}

// listNames shows a name set in a message: up to three names.
func listNames(set []string) string {
	if len(set) <= 3 {
		return strings.Join(set, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(set[:3], ", "), len(set)-3)
}

// isoWeek returns the ISO week of t (UTC): its start (Monday 00:00), its
// end (the next Monday 00:00) and its name, "2026-W48".
func isoWeek(t time.Time) (start, end time.Time, name string) {
	t = t.UTC()
	sinceMonday := (int(t.Weekday()) + 6) % 7
	start = time.Date(t.Year(), t.Month(), t.Day()-sinceMonday, 0, 0, 0, 0, time.UTC)
	y, w := t.ISOWeek()
	return start, start.AddDate(0, 0, 7), fmt.Sprintf("%04d-W%02d", y, w)
}
