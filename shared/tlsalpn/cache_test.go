package tlsalpn

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

type fixedSource map[string]string

func (s fixedSource) TLSALPNKeyAuthorization(_ context.Context, domain string) (string, error) {
	return s[domain], nil
}

func TestCacheExpiresAndStaysBounded(t *testing.T) {
	t.Parallel()
	r := New(fixedSource{}, nil)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.now = func() time.Time { return now }
	r.maxEntries = 4

	first, err := r.certificate("a.certfleet.test", "tok.thumb")
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.certificate("a.certfleet.test", "tok.thumb")
	if err != nil || again != first {
		t.Fatalf("second call within the TTL: %p, %v; want the cached %p", again, err, first)
	}
	now = now.Add(cacheTTL)
	later, err := r.certificate("a.certfleet.test", "tok.thumb")
	if err != nil || later == first || bytes.Equal(later.Certificate[0], first.Certificate[0]) {
		t.Fatalf("after the TTL the old certificate is still served (%v)", err)
	}

	for i := range 10 {
		now = now.Add(time.Second)
		if _, err := r.certificate(fmt.Sprintf("n%d.certfleet.test", i), "tok.thumb"); err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		n := len(r.cache)
		r.mu.Unlock()
		if n > r.maxEntries {
			t.Fatalf("cache holds %d entries, bound %d", n, r.maxEntries)
		}
	}
	// The newest entries survive; the oldest were evicted.
	r.mu.Lock()
	_, newest := r.cache[cacheKey{"n9.certfleet.test", "tok.thumb"}]
	_, oldest := r.cache[cacheKey{"n0.certfleet.test", "tok.thumb"}]
	r.mu.Unlock()
	if !newest || oldest {
		t.Errorf("eviction kept newest=%v oldest=%v, want the newest only", newest, oldest)
	}
}

func TestCertificateValidity(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c, err := ChallengeCertificate("a.certfleet.test", "tok.thumb", now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.NotBefore.After(now) || !c.Leaf.NotAfter.After(now.Add(cacheTTL)) {
		t.Errorf("validity %v..%v does not cover the cache lifetime from %v", c.Leaf.NotBefore, c.Leaf.NotAfter, now)
	}
	// Only the two extensions RFC 8737 asks for.
	if len(c.Leaf.Extensions) != 2 {
		t.Errorf("certificate has %d extensions, want subjectAltName and acmeIdentifier only: %v", len(c.Leaf.Extensions), c.Leaf.Extensions)
	}
	if c.Leaf.Subject.String() != "" {
		t.Errorf("subject %q, want empty (the name is only in the SAN)", c.Leaf.Subject)
	}
}
