package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

func TestLimitHoldsUnderConcurrencyAndResetsWithTheWindow(t *testing.T) {
	ctx := context.Background()
	p := testenv.New(t)
	clock := p.Clock
	l := ratelimit.New(p.Store, "test", 10, time.Minute, clock.Now)

	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			v, err := l.Hit(ctx, "key")
			if err != nil {
				t.Error(err)
			}
			if v.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 10 {
		t.Fatalf("%d of 32 concurrent hits allowed, want exactly 10", allowed.Load())
	}
	v, err := l.Check(ctx, "key")
	if err != nil || v.Allowed || v.Remaining != 0 || v.RetryAfter <= 0 || v.RetryAfter > time.Minute {
		t.Fatalf("check over the limit: %+v %v", v, err)
	}
	if v, _ := l.Check(ctx, "other"); !v.Allowed || v.Remaining != 10 {
		t.Fatalf("another key shares the count: %+v", v)
	}
	clock.Advance(time.Minute)
	if v, _ := l.Hit(ctx, "key"); !v.Allowed || v.Remaining != 9 {
		t.Fatalf("the next window did not start afresh: %+v", v)
	}
}
