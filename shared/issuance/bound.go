package issuance

import (
	"context"
	"sync"
)

// boundedCA bounds how many requests one process has in flight per CA
// (per directory URL), so a burst of issues neither overwhelms a CA nor
// trips its rate limits (Config.MaxInFlightPerCA). A request waits for a
// free slot or its context.
type boundedCA struct {
	ACME
	n    int
	mu   sync.Mutex
	sems map[string]chan struct{}
}

func newBoundedCA(ca ACME, n int) *boundedCA {
	return &boundedCA{ACME: ca, n: n, sems: map[string]chan struct{}{}}
}

func (b *boundedCA) sem(dir string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sems[dir]
	if !ok {
		s = make(chan struct{}, b.n)
		b.sems[dir] = s
	}
	return s
}

// bounded runs call in one of the CA's slots.
func bounded[T any](ctx context.Context, b *boundedCA, acct Account, call func() (T, error)) (T, error) {
	s := b.sem(acct.DirectoryURL)
	select {
	case s <- struct{}{}:
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
	defer func() { <-s }()
	return call()
}

func (b *boundedCA) NewOrder(ctx context.Context, acct Account, req OrderRequest) (Order, error) {
	return bounded(ctx, b, acct, func() (Order, error) { return b.ACME.NewOrder(ctx, acct, req) })
}

func (b *boundedCA) GetOrder(ctx context.Context, acct Account, orderURL string) (Order, error) {
	return bounded(ctx, b, acct, func() (Order, error) { return b.ACME.GetOrder(ctx, acct, orderURL) })
}

func (b *boundedCA) GetAuthorization(ctx context.Context, acct Account, authzURL string) (Authorization, error) {
	return bounded(ctx, b, acct, func() (Authorization, error) { return b.ACME.GetAuthorization(ctx, acct, authzURL) })
}

func (b *boundedCA) AcceptChallenge(ctx context.Context, acct Account, challengeURL string) (Challenge, error) {
	return bounded(ctx, b, acct, func() (Challenge, error) { return b.ACME.AcceptChallenge(ctx, acct, challengeURL) })
}

func (b *boundedCA) Finalize(ctx context.Context, acct Account, finalizeURL string, csr []byte) (Order, error) {
	return bounded(ctx, b, acct, func() (Order, error) { return b.ACME.Finalize(ctx, acct, finalizeURL, csr) })
}

func (b *boundedCA) Download(ctx context.Context, acct Account, certURL, preferredChain string) (Certificate, error) {
	return bounded(ctx, b, acct, func() (Certificate, error) { return b.ACME.Download(ctx, acct, certURL, preferredChain) })
}

func (b *boundedCA) Revoke(ctx context.Context, acct Account, cert []byte, reason int) error {
	_, err := bounded(ctx, b, acct, func() (struct{}, error) { return struct{}{}, b.ACME.Revoke(ctx, acct, cert, reason) })
	return err
}
