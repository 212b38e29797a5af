package acmeacct

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/store"
)

// RegisterStep is the worker's handler for KindRegister: it registers a
// pending account with its CA and makes it active, or failed with the
// CA's reason. It is idempotent: the account key is made and stored
// before the CA is asked (so a retry presents the same key and the CA
// returns the same account), and an account that is no longer pending is
// left alone. Transient failures are returned for a retry, until the last
// attempt marks the account failed.
func (s *Service) RegisterStep(ctx context.Context, d queue.Delivery) error {
	var m registerMessage
	if err := json.Unmarshal(d.Body, &m); err != nil || m.UserID <= 0 || m.AccountID <= 0 {
		s.log.Error("acmeacct: malformed registration message; dropped", "id", d.ID)
		return nil
	}
	rec, it, err := s.load(ctx, m.UserID, m.AccountID)
	if err != nil || rec.Status != StatusPending {
		// Deleted, or already registered, disabled or failed.
		return nil
	}
	if rec.SealedKey == nil {
		if rec, it, err = s.storeNewKey(ctx, rec, it); err != nil {
			return err
		}
	}
	key, eab, err := s.secrets(ctx, rec)
	if err != nil {
		return err
	}
	p, err := s.ProviderByID(ctx, rec.ProviderID)
	if err != nil {
		return s.finish(ctx, rec, it, "", "provider is gone: "+err.Error())
	}
	if meta, err := s.ca.Directory(ctx, p.DirectoryURL); err == nil {
		s.cacheMeta(ctx, p.ID, meta)
	}
	url, err := s.ca.Register(ctx, Registration{DirectoryURL: p.DirectoryURL, Email: rec.Email, Key: key,
		EABKid: rec.EABKid, EABHMACKey: eab})
	var problem *Problem
	switch {
	case errors.As(err, &problem):
		return s.finish(ctx, rec, it, "", "the CA refused the registration: "+problem.Error())
	case err != nil && d.Attempt >= s.cfg.MaxRegisterAttempts:
		return s.finish(ctx, rec, it, "", fmt.Sprintf("the CA could not be reached after %d attempts: %v", d.Attempt, err))
	case err != nil:
		return fmt.Errorf("acmeacct: register account %d: %w", rec.ID, err)
	}
	return s.finish(ctx, rec, it, url, "")
}

// Signer returns what signing ACME requests as one of userID's accounts
// takes: the directory URL, the account URL and the opened account key.
// Errors: NotFound; Conflict for an account that is not active.
func (s *Service) Signer(ctx context.Context, userID, acctID int64) (directoryURL, accountURL string, key crypto.Signer, err error) {
	rec, _, err := s.load(ctx, userID, acctID)
	if err != nil {
		return "", "", nil, err
	}
	if rec.Status != StatusActive || rec.SealedKey == nil || rec.AccountURL == "" {
		return "", "", nil, apperr.New(apperr.Conflict, "ACME account %d is %s, not active", acctID, rec.Status)
	}
	p, err := s.ProviderByID(ctx, rec.ProviderID)
	if err != nil {
		return "", "", nil, err
	}
	if key, _, err = s.secrets(ctx, rec); err != nil {
		return "", "", nil, err
	}
	return p.DirectoryURL, rec.AccountURL, key, nil
}

// storeNewKey gives the account an ECDSA P-256 key, sealed.
func (s *Service) storeNewKey(ctx context.Context, rec accountRecord, it store.Item) (accountRecord, store.Item, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return rec, it, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return rec, it, err
	}
	if rec.SealedKey, err = s.sealer.Seal(ctx, der, sealContext(rec.ID, "account-key")); err != nil {
		return rec, it, fmt.Errorf("acmeacct: seal account key: %w", err)
	}
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return rec, it, err
	}
	stored, err := s.st.Put(ctx, next, store.IfVersion(it.Version))
	if err != nil {
		// Another delivery of this step got there first: use its key.
		return rec, it, fmt.Errorf("acmeacct: store account key: %w", err)
	}
	return rec, stored, nil
}

// secrets opens the account key and the EAB HMAC key.
func (s *Service) secrets(ctx context.Context, rec accountRecord) (crypto.Signer, string, error) {
	der, err := s.sealer.Open(ctx, rec.SealedKey, sealContext(rec.ID, "account-key"))
	if err != nil {
		return nil, "", fmt.Errorf("acmeacct: open account key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, "", fmt.Errorf("acmeacct: parse account key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, "", errors.New("acmeacct: account key is not a signer")
	}
	eab := ""
	if rec.SealedEAB != nil {
		b, err := s.sealer.Open(ctx, rec.SealedEAB, sealContext(rec.ID, "eab"))
		if err != nil {
			return nil, "", fmt.Errorf("acmeacct: open EAB key: %w", err)
		}
		eab = string(b)
	}
	return signer, eab, nil
}

// finish records the registration's outcome: active with its URL, or
// failed with the reason. A lost race means another delivery finished.
func (s *Service) finish(ctx context.Context, rec accountRecord, it store.Item, url, failure string) error {
	rec.Status, rec.AccountURL, rec.LastError, rec.UpdatedAt = StatusActive, url, "", s.now()
	if failure != "" {
		rec.Status, rec.LastError = StatusFailed, failure
		s.log.Warn("acmeacct: registration failed", "account", rec.ID, "reason", failure)
	}
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return err
	}
	if _, err := s.st.Put(ctx, next, store.IfVersion(it.Version)); err != nil && !errors.Is(err, store.ErrConditionFailed) {
		return fmt.Errorf("acmeacct: record registration of account %d: %w", rec.ID, err)
	}
	return nil
}
