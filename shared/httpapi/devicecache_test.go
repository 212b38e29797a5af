package httpapi_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// countingVerifier counts the calls that reach the real verifier.
type countingVerifier struct {
	v     httpapi.DeviceVerifier
	calls atomic.Int64
}

func (c *countingVerifier) VerifyDevice(ctx context.Context, token string) (int64, int64, error) {
	c.calls.Add(1)
	return c.v.VerifyDevice(ctx, token)
}

func TestCachingVerifier(t *testing.T) {
	svc := tokenService(t)
	ctx := context.Background()
	cv := &countingVerifier{v: svc}
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	v := httpapi.NewCachingVerifier(cv, 4, clock)

	tokens := make([]string, 5)
	for i := range tokens {
		tk, err := svc.Issue(ctx, int64(i+1), 100)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tk.AccessToken
	}
	for range 3 {
		d, u, err := v.VerifyDevice(ctx, tokens[0])
		if err != nil || d != 1 || u != 100 {
			t.Fatalf("%d %d %v", d, u, err)
		}
	}
	if n := cv.calls.Load(); n != 1 {
		t.Fatalf("verifier called %d times for one token", n)
	}
	// Rejections are never cached.
	for range 2 {
		if _, _, err := v.VerifyDevice(ctx, tokens[0]+"x"); apperr.CodeOf(err) != apperr.Unauthorized {
			t.Fatalf("tampered token: %v", err)
		}
	}
	if n := cv.calls.Load(); n != 3 {
		t.Fatalf("verifier called %d times", n)
	}
	// Bounded: five tokens through a cache of four push the first out.
	for _, tk := range tokens {
		if _, _, err := v.VerifyDevice(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	before := cv.calls.Load()
	if d, _, err := v.VerifyDevice(ctx, tokens[4]); err != nil || d != 5 || cv.calls.Load() != before {
		t.Fatalf("a recent token: %d %v, calls %d → %d", d, err, before, cv.calls.Load())
	}
	if _, _, err := v.VerifyDevice(ctx, tokens[0]); err != nil || cv.calls.Load() != before+1 {
		t.Fatalf("an evicted token: %v, calls %d → %d", err, before, cv.calls.Load())
	}
	// Past the token's exp the cache asks the verifier again (which, on
	// its own real clock, still accepts).
	now.Add(int64(2 * time.Hour))
	if _, _, err := v.VerifyDevice(ctx, tokens[4]); err != nil || cv.calls.Load() != before+2 {
		t.Fatalf("an expired entry: %v, calls %d → %d", err, before, cv.calls.Load())
	}
}
