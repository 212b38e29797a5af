package devicetoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Refresh token layout: "rt_" + base64url(32 random bytes).
const (
	refreshPrefix   = "rt_"
	refreshRandLen  = 32
	refreshTokenLen = len(refreshPrefix) + 43 // RawURLEncoding of 32 bytes

	refreshSK = "refresh"
	familySK  = "family"
	// familyIndex lists a device's families (for revoking a device).
	familyIndex = "gsi1"
	// maxRefreshAttempts bounds the optimistic-concurrency loops; two
	// rounds always settle (a lost race is then seen as a used token or a
	// revoked family).
	maxRefreshAttempts = 4
)

// refreshRecord is one refresh token, stored under the SHA-256 of the token.
type refreshRecord struct {
	DeviceID  int64     `json:"device_id"`
	UserID    int64     `json:"user_id"`
	FamilyID  string    `json:"family_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// UsedAt is set when the token was rotated; presenting it again is
	// reuse.
	UsedAt time.Time `json:"used_at,omitzero"`
}

// familyRecord is a chain of refresh tokens from one Issue. Every rotation
// and the revocation update it under its version, so it is the point where
// concurrent refreshes and revocations are ordered.
type familyRecord struct {
	DeviceID  int64     `json:"device_id"`
	UserID    int64     `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	// Current is the hash of the family's one live token.
	Current   string    `json:"current"`
	ExpiresAt time.Time `json:"expires_at"`
	Rotations int64     `json:"rotations"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"revoked_reason,omitempty"`
}

func refreshKey(hash string) store.Key {
	return store.Key{Table: Table, PK: "refresh#" + hash, SK: refreshSK}
}

func familyKey(id string) store.Key {
	return store.Key{Table: Table, PK: "refresh-family#" + id, SK: familySK}
}

func familyIndexKey(deviceID int64, familyID string) store.IndexKey {
	return store.IndexKey{PK: "devtoken#" + strconv.FormatInt(deviceID, 10), SK: "family#" + familyID}
}

// newRefreshToken returns a fresh token and its hash.
func newRefreshToken() (token, hash string) {
	b := make([]byte, refreshRandLen)
	_, _ = rand.Read(b)
	token = refreshPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashRefresh(token)
}

func hashRefresh(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// wellFormed reports whether s looks like one of our refresh tokens, so
// that junk costs no store read.
func wellFormed(s string) bool {
	if len(s) != refreshTokenLen || !strings.HasPrefix(s, refreshPrefix) {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[len(refreshPrefix):])
	return err == nil && len(b) == refreshRandLen
}

func errRefreshInvalid() error {
	return apperr.New(apperr.Unauthorized, "refresh token is invalid or has expired")
}

// putJSON builds an item holding v as JSON, expiring at expiresAt (the
// store then drops it; this package still checks expiry itself with
// Config.Now).
func putJSON(k store.Key, v any, idx map[string]store.IndexKey, expiresAt time.Time) (store.Item, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return store.Item{}, fmt.Errorf("devicetoken: encode %s: %w", k, err)
	}
	return store.Item{Key: k, Value: b, Indexes: idx, ExpiresAt: expiresAt}, nil
}

func getJSON(ctx context.Context, st store.Store, k store.Key, v any) (store.Item, error) {
	it, err := st.Get(ctx, k)
	if err != nil {
		return store.Item{}, err
	}
	if err := json.Unmarshal(it.Value, v); err != nil {
		return store.Item{}, fmt.Errorf("devicetoken: decode %s: %w", k, err)
	}
	return it, nil
}

// newFamily stores a new family with its first refresh token and returns
// the token.
func (s *Service) newFamily(ctx context.Context, deviceID, userID int64, now time.Time) (string, error) {
	token, hash := newRefreshToken()
	famID := randomString(16)
	exp := now.Add(s.cfg.RefreshTTL)
	tokIt, err := putJSON(refreshKey(hash), refreshRecord{
		DeviceID: deviceID, UserID: userID, FamilyID: famID, IssuedAt: now, ExpiresAt: exp,
	}, nil, exp)
	if err != nil {
		return "", err
	}
	famIt, err := putJSON(familyKey(famID), familyRecord{
		DeviceID: deviceID, UserID: userID, CreatedAt: now, Current: hash, ExpiresAt: exp,
	}, map[string]store.IndexKey{familyIndex: familyIndexKey(deviceID, famID)}, exp)
	if err != nil {
		return "", err
	}
	err = s.st.Transact(ctx, []store.Write{
		store.PutWrite(famIt, store.IfAbsent),
		store.PutWrite(tokIt, store.IfAbsent),
	})
	if err != nil {
		return "", fmt.Errorf("devicetoken: store refresh token: %w", err)
	}
	return token, nil
}

// Refresh rotates a refresh token: it is marked used and a new access token
// and refresh token (same family) are returned. Of concurrent refreshes of
// one token exactly one succeeds.
//
// Errors:
//   - ErrRefreshRotated (Unauthorized): the token was already rotated
//     (reuse: the whole family is revoked now, so the token that replaced
//     it stops working too), or its family was revoked earlier. The loser
//     of a concurrent refresh of the same token gets this as well: two
//     presentations of one token are treated as reuse;
//   - apperr Unauthorized: unknown, malformed or expired token;
//   - store, sealer or signing failures (internal). A reuse whose
//     revocation could not be stored is reported as such a failure, so the
//     client retries and the revocation is attempted again.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	if !wellFormed(refreshToken) {
		return Tokens{}, errRefreshInvalid()
	}
	hash := hashRefresh(refreshToken)
	for range maxRefreshAttempts {
		var rec refreshRecord
		tokIt, err := getJSON(ctx, s.st, refreshKey(hash), &rec)
		if errors.Is(err, store.ErrNotFound) {
			return Tokens{}, errRefreshInvalid()
		}
		if err != nil {
			return Tokens{}, fmt.Errorf("devicetoken: refresh: %w", err)
		}
		now := s.cfg.Now()
		if !rec.UsedAt.IsZero() {
			if err := s.revokeFamily(ctx, rec.FamilyID, "refresh token reuse"); err != nil {
				return Tokens{}, err
			}
			return Tokens{}, ErrRefreshRotated
		}
		var fam familyRecord
		famIt, err := getJSON(ctx, s.st, familyKey(rec.FamilyID), &fam)
		if errors.Is(err, store.ErrNotFound) {
			return Tokens{}, errRefreshInvalid()
		}
		if err != nil {
			return Tokens{}, fmt.Errorf("devicetoken: refresh: %w", err)
		}
		if !fam.RevokedAt.IsZero() {
			return Tokens{}, ErrRefreshRotated
		}
		if !now.Before(rec.ExpiresAt) {
			return Tokens{}, errRefreshInvalid()
		}
		if fam.Current != hash {
			// An unused token that is not the family's live one cannot
			// come from this package; treat it as reuse.
			if err := s.revokeFamily(ctx, rec.FamilyID, "refresh token is not the family's live token"); err != nil {
				return Tokens{}, err
			}
			return Tokens{}, ErrRefreshRotated
		}

		access, err := s.signAccess(ctx, rec.DeviceID, rec.UserID, now)
		if err != nil {
			return Tokens{}, err
		}
		next, nextHash := newRefreshToken()
		exp := now.Add(s.cfg.RefreshTTL)
		used := rec
		used.UsedAt = now
		// A used token stays until its own expiry, so reuse is detected
		// for as long as the token could have been refreshed.
		usedIt, err := putJSON(tokIt.Key, used, tokIt.Indexes, rec.ExpiresAt)
		if err != nil {
			return Tokens{}, err
		}
		newIt, err := putJSON(refreshKey(nextHash), refreshRecord{
			DeviceID: rec.DeviceID, UserID: rec.UserID, FamilyID: rec.FamilyID, IssuedAt: now, ExpiresAt: exp,
		}, nil, exp)
		if err != nil {
			return Tokens{}, err
		}
		fam.Current = nextHash
		fam.Rotations++
		if exp.After(fam.ExpiresAt) {
			fam.ExpiresAt = exp
		}
		famNew, err := putJSON(famIt.Key, fam, famIt.Indexes, fam.ExpiresAt)
		if err != nil {
			return Tokens{}, err
		}
		err = s.st.Transact(ctx, []store.Write{
			store.PutWrite(usedIt, store.IfVersion(tokIt.Version)),
			store.PutWrite(famNew, store.IfVersion(famIt.Version)),
			store.PutWrite(newIt, store.IfAbsent),
		})
		if errors.Is(err, store.ErrConditionFailed) {
			continue // someone else rotated or revoked: look again
		}
		if err != nil {
			return Tokens{}, fmt.Errorf("devicetoken: refresh: %w", err)
		}
		return s.tokens(access, next), nil
	}
	return Tokens{}, fmt.Errorf("devicetoken: refresh: the token kept changing under %d attempts", maxRefreshAttempts)
}

// revokeFamily marks a family revoked, so none of its tokens refreshes
// again. Revoking a revoked or vanished family does nothing.
func (s *Service) revokeFamily(ctx context.Context, familyID, reason string) error {
	for range maxRefreshAttempts {
		var fam familyRecord
		it, err := getJSON(ctx, s.st, familyKey(familyID), &fam)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("devicetoken: revoke token family: %w", err)
		}
		if !fam.RevokedAt.IsZero() {
			return nil
		}
		fam.RevokedAt = s.cfg.Now()
		fam.Reason = reason
		upd, err := putJSON(it.Key, fam, it.Indexes, fam.ExpiresAt)
		if err != nil {
			return err
		}
		_, err = s.st.Put(ctx, upd, store.IfVersion(it.Version))
		if errors.Is(err, store.ErrConditionFailed) {
			continue
		}
		if err != nil {
			return fmt.Errorf("devicetoken: revoke token family: %w", err)
		}
		return nil
	}
	return fmt.Errorf("devicetoken: revoke token family: it kept changing under %d attempts", maxRefreshAttempts)
}

// RevokeDevice revokes every refresh token family of the device (it was
// deleted): none of its refresh tokens works again. Its access tokens
// stay valid until they expire; device endpoints also check that the
// device still exists.
func (s *Service) RevokeDevice(ctx context.Context, deviceID int64) error {
	q := store.Query{Table: Table, Index: familyIndex, PK: familyIndexKey(deviceID, "").PK, Limit: store.MaxQueryLimit}
	for {
		page, err := s.st.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("devicetoken: list the device's token families: %w", err)
		}
		for _, it := range page.Items {
			if err := s.revokeFamily(ctx, strings.TrimPrefix(it.PK, "refresh-family#"), "device deleted"); err != nil {
				return err
			}
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return nil
		}
	}
}
