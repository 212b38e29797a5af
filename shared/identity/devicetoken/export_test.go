package devicetoken

import (
	"context"
	"crypto/ed25519"

	"github.com/certfleet/certfleet/shared/store"
)

// SigningKeyForTest returns the Service's active signing key (loading or
// creating it), so tests can forge tokens with it and look for its bytes.
func SigningKeyForTest(ctx context.Context, s *Service) (kid string, priv ed25519.PrivateKey, err error) {
	r, err := s.keyring(ctx, true)
	if err != nil {
		return "", nil, err
	}
	return r.active.kid, r.active.priv, nil
}

// RefreshItemForTest is where the record of a refresh token is stored.
func RefreshItemForTest(token string) store.Key { return refreshKey(hashRefresh(token)) }
