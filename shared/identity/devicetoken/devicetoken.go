// Package devicetoken issues and checks the credentials of enrolled devices
// (the cert-ctrl agent, protocol §1.4):
//
//   - the access token is a JWT signed with EdDSA (Ed25519) carrying the
//     numeric device_id and user_id the device endpoints rely on; it is
//     checked without any store access once the signing key is cached;
//   - the refresh token is an opaque random string ("rt_" + 256 bits) kept in
//     the store only as a SHA-256 hash. Every refresh rotates it; a token
//     belongs to a family (one login or registration), and presenting a token
//     that was already rotated revokes the whole family (ErrRefreshRotated).
//
// Everything lives in the "identity" table:
//
//	PK "signing-key"            SK "device-jwt"  the active signing key (private part sealed)
//	PK "refresh#<sha256 hex>"   SK "refresh"     one refresh token
//	PK "refresh-family#<id>"    SK "family"      its family: live token, revocation
//
// Family items are also indexed in gsi1 under PK "devtoken#<device id>" so
// that revoking a device can find its families. Refresh and family items
// carry Item.ExpiresAt so the store drops them once no token of theirs can
// be used; expiry is still checked here against Config.Now.
package devicetoken

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/store"
)

// Defaults for Config's zero fields. The access TTL follows the cert-ctrl
// reference server (3600 s); the agent refreshes when exp is less than 60 s
// away, so an access TTL must be well above a minute.
const (
	DefaultIssuer     = "certfleet"
	DefaultAudience   = "certfleet-device"
	DefaultAccessTTL  = time.Hour
	DefaultRefreshTTL = 30 * 24 * time.Hour
)

// Leeway is the clock skew tolerated on exp and iat.
const Leeway = 30 * time.Second

// MaxTokenBytes caps an access token's length; longer input is rejected
// before it is decoded.
const MaxTokenBytes = 4096

// Table is the store table every record of this package lives in.
const Table = "identity"

// TokenType is the token_type of every session.
const TokenType = "Bearer"

// ErrRefreshRotated is returned (possibly wrapped) by Refresh when the
// presented refresh token was already rotated, or belongs to a family that
// was revoked. Its code is Unauthorized; the HTTP edge answers it with 401,
// error.code 10003 and error.key "refresh_token_rotated" (see
// httpapi.WriteRefreshRotated), which makes the agent ask for a new login;
// the message also contains "rotated" and "family revoked", which the agent
// recognises as well. Test with errors.Is.
var ErrRefreshRotated = &apperr.Error{
	Code:    apperr.Unauthorized,
	Message: "refresh token was already rotated; token family revoked, sign in again",
}

// Config tunes a Service. Zero fields take the defaults above; Now defaults
// to time.Now.
type Config struct {
	Issuer     string
	Audience   string
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	Now        func() time.Time
}

// Tokens is a device session as the agent reads it from data.session.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	// ExpiresIn is the access token's lifetime in seconds.
	ExpiresIn int `json:"expires_in"`
}

// Claims is what a verified access token says.
type Claims struct {
	DeviceID  int64
	UserID    int64
	Subject   string // "device:<id>"
	ID        string // jti
	KeyID     string // kid of the key that signed it
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Service issues, verifies and refreshes device tokens. It is safe for
// concurrent use; several Services over one store (Lambda instances) agree
// on one signing key.
type Service struct {
	st     store.Store
	sealer keys.Sealer
	cfg    Config
	parser *jwt.Parser

	ring   atomic.Pointer[keyring]
	loadMu chan struct{} // a lock that honours ctx, held while loading the key
}

// New returns a Service over st, sealing its signing key with sealer.
// Negative durations are treated as zero (the default).
func New(st store.Store, sealer keys.Sealer, cfg Config) *Service {
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = DefaultAccessTTL
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = DefaultRefreshTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{st: st, sealer: sealer, cfg: cfg, loadMu: make(chan struct{}, 1)}
	s.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	)
	return s
}

// accessClaims is the JWT payload.
type accessClaims struct {
	jwt.RegisteredClaims
	DeviceID int64 `json:"device_id"`
	UserID   int64 `json:"user_id"`
}

// Validate is called by the jwt validator after the registered claims.
func (c *accessClaims) Validate() error {
	switch {
	case c.DeviceID <= 0:
		return errors.New("device_id missing")
	case c.UserID <= 0:
		return errors.New("user_id missing")
	case c.Subject != subjectOf(c.DeviceID):
		return errors.New("sub does not name device_id")
	case c.IssuedAt == nil:
		return errors.New("iat missing")
	case c.ID == "":
		return errors.New("jti missing")
	}
	return nil
}

// Issue starts a new session for a device: a fresh access token and a
// refresh token opening a new family. Errors: apperr Invalid for
// non-positive ids; store, sealer or signing failures (internal).
func (s *Service) Issue(ctx context.Context, deviceID, userID int64) (Tokens, error) {
	if deviceID <= 0 {
		return Tokens{}, apperr.InvalidField("device_id", "must be a positive integer")
	}
	if userID <= 0 {
		return Tokens{}, apperr.InvalidField("user_id", "must be a positive integer")
	}
	now := s.cfg.Now()
	access, err := s.signAccess(ctx, deviceID, userID, now)
	if err != nil {
		return Tokens{}, err
	}
	refresh, err := s.newFamily(ctx, deviceID, userID, now)
	if err != nil {
		return Tokens{}, err
	}
	return s.tokens(access, refresh), nil
}

func (s *Service) tokens(access, refresh string) Tokens {
	return Tokens{
		AccessToken:  access,
		RefreshToken: refresh,
		TokenType:    TokenType,
		ExpiresIn:    int(s.cfg.AccessTTL / time.Second),
	}
}

// signAccess makes an access token for the device, valid from now.
func (s *Service) signAccess(ctx context.Context, deviceID, userID int64, now time.Time) (string, error) {
	ring, err := s.keyring(ctx, true)
	if err != nil {
		return "", fmt.Errorf("devicetoken: signing key: %w", err)
	}
	k := ring.active
	now = now.Truncate(time.Second)
	claims := &accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   subjectOf(deviceID),
			Audience:  jwt.ClaimStrings{s.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.AccessTTL)),
			ID:        randomString(16),
		},
		DeviceID: deviceID,
		UserID:   userID,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = k.kid
	signed, err := tok.SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("devicetoken: sign access token: %w", err)
	}
	return signed, nil
}

// Verify checks an access token: EdDSA signature by a known key (looked up
// by kid), issuer, audience, exp (required), iat, and the device claims.
// Every token failure is an *apperr.Error with code Unauthorized whose
// message never repeats the token. An error with another code means the
// key could not be loaded (store or sealer failure) and says nothing about
// the token.
func (s *Service) Verify(ctx context.Context, accessToken string) (Claims, error) {
	if accessToken == "" || len(accessToken) > MaxTokenBytes {
		return Claims{}, errAccessInvalid()
	}
	var (
		c        accessClaims
		kid      string
		infraErr error
	)
	_, err := s.parser.ParseWithClaims(accessToken, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodEd25519); !ok {
			return nil, errors.New("unexpected signing method")
		}
		kid, _ = t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("kid missing")
		}
		ring, err := s.keyring(ctx, false)
		if errors.Is(err, errNoSigningKey) {
			return nil, err
		}
		if err != nil {
			infraErr = err
			return nil, err
		}
		pub, ok := ring.verify[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		return pub, nil
	})
	if infraErr != nil {
		return Claims{}, fmt.Errorf("devicetoken: verify: signing key: %w", infraErr)
	}
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) && onlyExpired(err) {
			return Claims{}, apperr.New(apperr.Unauthorized, "access token has expired")
		}
		return Claims{}, errAccessInvalid()
	}
	return Claims{
		DeviceID:  c.DeviceID,
		UserID:    c.UserID,
		Subject:   c.Subject,
		ID:        c.ID,
		KeyID:     kid,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

// onlyExpired reports whether err is about expiry and no other claim: an
// expired token that is also wrong otherwise is reported as invalid.
func onlyExpired(err error) bool {
	for _, other := range []error{
		jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable, jwt.ErrTokenSignatureInvalid,
		jwt.ErrTokenInvalidAudience, jwt.ErrTokenInvalidIssuer, jwt.ErrTokenUsedBeforeIssued,
		jwt.ErrTokenRequiredClaimMissing, jwt.ErrTokenNotValidYet,
	} {
		if errors.Is(err, other) {
			return false
		}
	}
	return true
}

// VerifyDevice is Verify reduced to the ids, for the HTTP edge's
// httpapi.DeviceVerifier.
func (s *Service) VerifyDevice(ctx context.Context, accessToken string) (deviceID, userID int64, err error) {
	c, err := s.Verify(ctx, accessToken)
	if err != nil {
		return 0, 0, err
	}
	return c.DeviceID, c.UserID, nil
}

// subjectOf is the sub claim of a device's access token.
func subjectOf(deviceID int64) string { return "device:" + strconv.FormatInt(deviceID, 10) }

func errAccessInvalid() error {
	return apperr.New(apperr.Unauthorized, "access token is invalid")
}

// randomString returns n random bytes, base64url-encoded without padding.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
