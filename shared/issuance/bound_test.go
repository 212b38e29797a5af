package issuance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowCA answers GetOrder after a pause and records the most calls it had
// in flight at once, per directory.
type slowCA struct {
	ACME
	mu       sync.Mutex
	inFlight map[string]int
	most     map[string]int
}

func (c *slowCA) GetOrder(_ context.Context, acct Account, _ string) (Order, error) {
	c.mu.Lock()
	c.inFlight[acct.DirectoryURL]++
	c.most[acct.DirectoryURL] = max(c.most[acct.DirectoryURL], c.inFlight[acct.DirectoryURL])
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	c.mu.Lock()
	c.inFlight[acct.DirectoryURL]--
	c.mu.Unlock()
	return Order{Status: "valid"}, nil
}

func TestBoundedCA(t *testing.T) {
	ca := &slowCA{inFlight: map[string]int{}, most: map[string]int{}}
	b := newBoundedCA(ca, 3)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range 40 {
		dir := []string{"https://a.test/dir", "https://b.test/dir"}[i%2]
		wg.Go(func() {
			if o, err := b.GetOrder(context.Background(), Account{DirectoryURL: dir}, "x"); err == nil && o.Status == "valid" {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 40 {
		t.Errorf("%d of 40 calls answered", ok.Load())
	}
	for dir, n := range ca.most {
		if n != 3 {
			t.Errorf("%s had %d calls in flight at most, want exactly the bound 3", dir, n)
		}
	}
	// A caller that gives up while waiting for a slot gets its context's error.
	full := newBoundedCA(ca, 1)
	full.sem("https://c.test/dir") <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := full.GetOrder(ctx, Account{DirectoryURL: "https://c.test/dir"}, "x"); err != context.DeadlineExceeded {
		t.Errorf("waiting on a full CA: %v", err)
	}
}
