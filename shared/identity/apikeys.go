package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// An API key token is "ak_" + 16 hex characters of public id + "_" + a
// 256-bit secret in base64url. The public id names the key in URLs and is
// the Qiniu dialect's access key; the secret is stored as a digest (to
// check bearer tokens with one read) and sealed (so HMAC signatures made
// with it can be verified).
const (
	apiKeyPrefix   = "ak_"
	apiKeyIDLen    = 16
	maxKeysPerUser = 100
	maxKeyName     = 100
	// lastUsedEvery bounds how often use of a key is written back.
	lastUsedEvery = 5 * time.Minute
)

// APIKey is a key as shown to its owner (never with its secret).
type APIKey struct {
	ID          string       `json:"id"`
	UserID      int64        `json:"user_id"`
	Name        string       `json:"name"`
	Permissions []Permission `json:"permissions"`
	CreatedAt   time.Time    `json:"created_at"`
	ExpiresAt   *time.Time   `json:"expires_at"`
	LastUsedAt  *time.Time   `json:"last_used_at"`
}

type apiKeyRecord struct {
	APIKey
	SecretDigest string `json:"secret_digest"`
	SealedSecret []byte `json:"sealed_secret"`
}

// NewAPIKey is what creating a key needs.
type NewAPIKey struct {
	Name        string       `json:"name"`
	Permissions []Permission `json:"permissions"`
	ExpiresAt   *time.Time   `json:"expires_at"`
}

func apiKeyKey(id string) store.Key { return store.Key{Table: Table, PK: "apikey#" + id, SK: "apikey"} }
func keysOf(userID int64) string    { return "apikeys#" + strconv.FormatInt(userID, 10) }

func sealContext(id string) map[string]string { return map[string]string{"apikey": id} }

// CreateAPIKey makes a key for userID and returns it with its token, which
// is shown this once.
func (s *Service) CreateAPIKey(ctx context.Context, userID int64, req NewAPIKey) (APIKey, string, error) {
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > maxKeyName {
		return APIKey{}, "", apperr.InvalidField("name", "is required, at most %d characters", maxKeyName)
	}
	if err := ValidatePermissions(req.Permissions); err != nil {
		return APIKey{}, "", err
	}
	if req.ExpiresAt != nil && !req.ExpiresAt.After(s.now()) {
		return APIKey{}, "", apperr.InvalidField("expires_at", "must be in the future")
	}
	existing, _, err := s.ListAPIKeys(ctx, userID, maxKeysPerUser, "")
	if err != nil {
		return APIKey{}, "", err
	}
	if len(existing) >= maxKeysPerUser {
		return APIKey{}, "", apperr.New(apperr.Conflict, "a user has at most %d API keys; delete one first", maxKeysPerUser)
	}
	idBytes := make([]byte, apiKeyIDLen/2)
	_, _ = rand.Read(idBytes)
	id := hex.EncodeToString(idBytes)
	secret := newSecret(32)
	sealed, err := s.sealer.Seal(ctx, []byte(secret), sealContext(id))
	if err != nil {
		return APIKey{}, "", fmt.Errorf("identity: seal API key: %w", err)
	}
	now := s.now().UTC()
	rec := apiKeyRecord{APIKey: APIKey{ID: id, UserID: userID, Name: req.Name, Permissions: req.Permissions,
		CreatedAt: now, ExpiresAt: req.ExpiresAt}, SecretDigest: digest(secret), SealedSecret: sealed}
	it, err := store.JSONItem(apiKeyKey(id), rec)
	if err != nil {
		return APIKey{}, "", err
	}
	it.Indexes = map[string]store.IndexKey{gsi1: {PK: keysOf(userID), SK: now.Format(time.RFC3339Nano) + "#" + id}}
	if req.ExpiresAt != nil {
		it.ExpiresAt = *req.ExpiresAt
	}
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		return APIKey{}, "", fmt.Errorf("identity: store API key: %w", err)
	}
	return rec.APIKey, apiKeyPrefix + id + "_" + secret, nil
}

// ListAPIKeys returns the user's keys, oldest first.
func (s *Service) ListAPIKeys(ctx context.Context, userID int64, limit int, cursor string) ([]APIKey, string, error) {
	page, err := s.st.Query(ctx, store.Query{Table: Table, Index: gsi1, PK: keysOf(userID), Limit: limit, Cursor: cursor})
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return nil, "", apperr.InvalidField("cursor", "is not valid for this list")
		}
		return nil, "", err
	}
	out, err := store.DecodeEach(page.Items, func(r apiKeyRecord) APIKey { return r.APIKey })
	return out, page.Cursor, err
}

// getAPIKey returns userID's key id; another user's key is NotFound.
func (s *Service) getAPIKey(ctx context.Context, userID int64, id string) (apiKeyRecord, store.Item, error) {
	var rec apiKeyRecord
	notFound := apperr.New(apperr.NotFound, "API key %q not found", id)
	if len(id) != apiKeyIDLen {
		return rec, store.Item{}, notFound
	}
	it, err := store.GetJSON(ctx, s.st, apiKeyKey(id), &rec)
	if errors.Is(err, store.ErrNotFound) || (err == nil && rec.UserID != userID) {
		return rec, store.Item{}, notFound
	}
	return rec, it, err
}

// GetAPIKey returns one of userID's keys.
func (s *Service) GetAPIKey(ctx context.Context, userID int64, id string) (APIKey, error) {
	rec, _, err := s.getAPIKey(ctx, userID, id)
	return rec.APIKey, err
}

// SetAPIKeyPermissions replaces the key's permissions.
func (s *Service) SetAPIKeyPermissions(ctx context.Context, userID int64, id string, perms []Permission) (APIKey, error) {
	if err := ValidatePermissions(perms); err != nil {
		return APIKey{}, err
	}
	rec, it, err := s.getAPIKey(ctx, userID, id)
	if err != nil {
		return APIKey{}, err
	}
	rec.Permissions = perms
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return APIKey{}, err
	}
	next.Indexes, next.ExpiresAt = it.Indexes, it.ExpiresAt
	if _, err := s.st.Put(ctx, next, store.IfVersion(it.Version)); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return APIKey{}, apperr.New(apperr.Conflict, "API key %q changed meanwhile; try again", id)
		}
		return APIKey{}, err
	}
	return rec.APIKey, nil
}

// DeleteAPIKey revokes one of userID's keys at once.
func (s *Service) DeleteAPIKey(ctx context.Context, userID int64, id string) error {
	_, it, err := s.getAPIKey(ctx, userID, id)
	if err != nil {
		return err
	}
	return s.st.Delete(ctx, it.Key, store.Always)
}

var errBadAPIKey = apperr.New(apperr.Unauthorized, "API key is invalid, expired or revoked")

// parseAPIKey splits a token into its public id and secret.
func parseAPIKey(token string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(token, apiKeyPrefix)
	if !ok || len(rest) < apiKeyIDLen+2 || rest[apiKeyIDLen] != '_' || len(rest) > 128 {
		return "", "", false
	}
	return rest[:apiKeyIDLen], rest[apiKeyIDLen+1:], true
}

// IsAPIKeyToken reports whether a bearer token has the API key shape.
func IsAPIKeyToken(token string) bool { return strings.HasPrefix(token, apiKeyPrefix) }

// APIKeyPrincipal resolves an API key token with one store read (plus, at
// most every lastUsedEvery per key, a write of its last-used time).
func (s *Service) APIKeyPrincipal(ctx context.Context, token string) (Principal, error) {
	id, secret, ok := parseAPIKey(token)
	if !ok {
		return Principal{}, errBadAPIKey
	}
	var rec apiKeyRecord
	it, err := store.GetJSON(ctx, s.st, apiKeyKey(id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, errBadAPIKey
	}
	if err != nil {
		return Principal{}, err
	}
	if subtle.ConstantTimeCompare([]byte(digest(secret)), []byte(rec.SecretDigest)) != 1 {
		return Principal{}, errBadAPIKey
	}
	now := s.now()
	if rec.LastUsedAt == nil || now.Sub(*rec.LastUsedAt) > lastUsedEvery {
		s.touchAPIKey(ctx, it, rec, now)
	}
	return Principal{Kind: KindAPIKey, UserID: rec.UserID, ID: id, Permissions: rec.Permissions}, nil
}

// touchAPIKey records the key's use; losing a race to another writer is
// fine (the other write is as recent), and a failure is only logged.
func (s *Service) touchAPIKey(ctx context.Context, it store.Item, rec apiKeyRecord, now time.Time) {
	used := now.UTC()
	rec.LastUsedAt = &used
	next, err := store.JSONItem(it.Key, rec)
	if err == nil {
		next.Indexes, next.ExpiresAt = it.Indexes, it.ExpiresAt
		_, err = s.st.Put(ctx, next, store.IfVersion(it.Version))
	}
	if err != nil && !errors.Is(err, store.ErrConditionFailed) {
		s.log.Warn("identity: recording API key use failed", "apikey", rec.ID, "err", err)
	}
}
