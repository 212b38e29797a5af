// Package ratelimit counts requests in fixed windows kept in the store, so
// a limit holds across every Lambda instance and process: each hit is one
// atomic counter update, and a window's counter expires after it.
package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/store"
)

// Table holds the counters.
const Table = "ratelimit"

// Limiter allows Limit hits per key in each Window.
type Limiter struct {
	st     store.Store
	name   string
	limit  int64
	window time.Duration
	now    func() time.Time
}

// New returns a limiter; name keeps its counters apart from other
// limiters'. now may be nil (time.Now).
func New(st store.Store, name string, limit int, window time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{st: st, name: name, limit: int64(limit), window: window, now: now}
}

// Limit is the number of hits allowed per window.
func (l *Limiter) Limit() int { return int(l.limit) }

// Verdict is the outcome of counting one hit.
type Verdict struct {
	Allowed bool
	// Remaining hits in this window (0 when over).
	Remaining int
	// RetryAfter is how long until the window resets.
	RetryAfter time.Duration
}

// Hit counts one hit for key (with delta 1) and judges it; Check judges
// without counting (delta 0). Either is one store update.
func (l *Limiter) Hit(ctx context.Context, key string) (Verdict, error) { return l.count(ctx, key, 1) }
func (l *Limiter) Check(ctx context.Context, key string) (Verdict, error) {
	return l.count(ctx, key, 0)
}

func (l *Limiter) count(ctx context.Context, key string, delta int64) (Verdict, error) {
	now := l.now()
	start := now.Truncate(l.window)
	end := start.Add(l.window)
	k := store.Key{Table: Table, PK: l.name + "#" + key, SK: strconv.FormatInt(start.Unix(), 10)}
	n, err := l.st.Increment(ctx, k, delta, end.Add(l.window))
	if err != nil {
		return Verdict{}, fmt.Errorf("ratelimit: %w", err)
	}
	v := Verdict{Allowed: n <= l.limit, RetryAfter: end.Sub(now)}
	if delta == 0 {
		v.Allowed = n < l.limit
	}
	v.Remaining = int(max(l.limit-n, 0))
	return v, nil
}
