package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// KindWorker is the issuance worker calling the internal routes with the
// worker token.
const KindWorker PrincipalKind = "worker"

// workerTokenPrefix marks a worker token ("cfw_" + 43 base64url chars).
const workerTokenPrefix = "cfw_"

// IsWorkerToken reports whether token looks like a worker token.
func IsWorkerToken(token string) bool { return strings.HasPrefix(token, workerTokenPrefix) }

var workerSecretKey = store.Key{Table: Table, PK: "worker", SK: "token"}

// workerSecret caches the opened worker secret once read.
type workerSecret struct {
	mu     sync.Mutex
	secret []byte
}

// WorkerToken returns the worker token: the credential of the internal
// worker routes (challenge start/stop, the issue result upload). It is one
// random 256-bit secret per installation, made on first use and stored
// sealed; every process of the installation reads the same one.
func (s *Service) WorkerToken(ctx context.Context) (string, error) {
	secret, err := s.workerSecret(ctx)
	if err != nil {
		return "", err
	}
	return workerTokenPrefix + base64.RawURLEncoding.EncodeToString(secret), nil
}

// WorkerPrincipal resolves a worker token. Errors: Unauthorized for any
// other token.
func (s *Service) WorkerPrincipal(ctx context.Context, token string) (Principal, error) {
	secret, err := s.workerSecret(ctx)
	if err != nil {
		return Principal{}, err
	}
	got, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, workerTokenPrefix))
	if err != nil || !IsWorkerToken(token) || subtle.ConstantTimeCompare(got, secret) != 1 {
		return Principal{}, apperr.New(apperr.Unauthorized, "invalid worker token")
	}
	return Principal{Kind: KindWorker, ID: "worker"}, nil
}

func workerSealContext() map[string]string { return map[string]string{"purpose": "worker-token"} }

// workerSecret reads (or makes, once per installation) the worker secret.
func (s *Service) workerSecret(ctx context.Context) ([]byte, error) {
	s.worker.mu.Lock()
	defer s.worker.mu.Unlock()
	if s.worker.secret != nil {
		return s.worker.secret, nil
	}
	it, err := s.st.Get(ctx, workerSecretKey)
	if errors.Is(err, store.ErrNotFound) {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		sealed, serr := s.sealer.Seal(ctx, secret, workerSealContext())
		if serr != nil {
			return nil, fmt.Errorf("identity: seal the worker secret: %w", serr)
		}
		_, err = s.st.Put(ctx, store.Item{Key: workerSecretKey, Value: sealed}, store.IfAbsent)
		if errors.Is(err, store.ErrConditionFailed) { // another process made it first
			it, err = s.st.Get(ctx, workerSecretKey)
		} else if err == nil {
			s.worker.secret = secret
			return secret, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read the worker secret: %w", err)
	}
	secret, err := s.sealer.Open(ctx, it.Value, workerSealContext())
	if err != nil {
		return nil, fmt.Errorf("identity: open the worker secret: %w", err)
	}
	s.worker.secret = secret
	return secret, nil
}
