package devices

// The device authorization grant (RFC 8628 in the cert-ctrl flavour,
// protocol §1.1) and the registration codes it hands out (§1.2).
//
// Store layout (table GrantTable, shared with identity; every item expires
// with its grant or code):
//
//	devicegrant#<sha256 hex of device code>  grant     the grant: user code, status, deciding user, interval, last poll
//	deviceusercode#<8-char user code>        usercode  the digest of the grant's device code
//	deviceregcode#<sha256 hex of code>       regcode   the user a registration code was minted for
//
// Device and registration codes are 256-bit random and kept only as
// digests. User codes are kept as they are: they are short enough to guess
// offline from a digest, so hashing them would protect nothing; a live one
// only lets a signed-in user decide a grant. Every state change is a
// conditional write on the version read, so concurrent Verify and Poll
// calls never both consume a grant or a code.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// GrantTable is the store table of grants and registration codes.
const GrantTable = "identity"

// GrantConfig tunes the grant; zero fields take the defaults.
type GrantConfig struct {
	// VerificationURI is the page where a signed-in user enters a user
	// code, e.g. "https://certs.example.com/device" (the app passes
	// CERTFLEET_PUBLIC_URL + "/device"). Required: Start fails without it.
	VerificationURI string
	// Interval is the poll interval told to an agent that asks for none;
	// default 5 s (rounded up to whole seconds).
	Interval time.Duration
	// RegistrationTTL is how long a registration code lives; default 10
	// min (rounded up to whole seconds).
	RegistrationTTL time.Duration
	// Now is the clock; default time.Now. Tests move it.
	Now func() time.Time
}

// Grant runs device authorization grants and the registration codes they
// end in. It keeps no state of its own, so it is safe for concurrent use.
type Grant struct {
	st              store.Store
	cfg             GrantConfig
	interval        int // default poll interval, seconds
	registrationTTL int // registration code lifetime, seconds
}

// NewGrant returns the grant over st.
func NewGrant(st store.Store, cfg GrantConfig) *Grant {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.RegistrationTTL <= 0 {
		cfg.RegistrationTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Grant{st: st, cfg: cfg, interval: grantSeconds(cfg.Interval), registrationTTL: grantSeconds(cfg.RegistrationTTL)}
}

// DeviceAuthorization is what Start answers the agent (device_start).
type DeviceAuthorization struct {
	DeviceCode              string
	UserCode                string // "XXXX-XXXX"
	VerificationURI         string
	VerificationURIComplete string
	Interval                int // seconds, > 0
	ExpiresIn               int // seconds, > 0
}

// PollResult is what Poll answers the agent (device_poll).
type PollResult struct {
	// Status is "authorization_pending", "slow_down", "access_denied",
	// "expired" or "ready".
	Status string
	// UserID is the user who approved, when ready.
	UserID int64
	// RegistrationCode is "rc_" and 43 base64url characters, when ready.
	// It works once and is shown only in this answer.
	RegistrationCode string
	// RegistrationTTL is the code's lifetime in seconds, when ready.
	RegistrationTTL int
}

// Limits and defaults of Start.
const (
	grantDefaultExpiresIn = 900
	grantMinExpiresIn     = 30
	grantMaxExpiresIn     = 3600
	grantMaxInterval      = 3600
	// grantAttempts bounds every optimistic-concurrency loop.
	grantAttempts = 16
)

// Grant statuses as stored, and the answers of Verify.
const (
	grantPending  = "pending"
	grantApproved = "approved"
	grantDenied   = "denied"
)

// Poll statuses.
const (
	grantPollPending = "authorization_pending"
	grantPollSlow    = "slow_down"
	grantPollDenied  = "access_denied"
	grantPollExpired = "expired"
	grantPollReady   = "ready"
)

// grantUserCodeAlphabet is [A-Z0-9] without vowels (no words) and without
// the characters people confuse (0/O, 1/I/L, U/V). 28 symbols, 8 places:
// about 38 bits.
const grantUserCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ23456789"

// grantRegCodePrefix starts every registration code.
const grantRegCodePrefix = "rc_"

type grantRecord struct {
	UserCode  string    `json:"user_code"` // normalized, no dash
	Status    string    `json:"status"`    // grantPending, grantApproved, grantDenied
	UserID    int64     `json:"user_id,omitempty"`
	Interval  int       `json:"interval"` // seconds
	CreatedAt time.Time `json:"created_at"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	LastPoll  time.Time `json:"last_poll,omitzero"`
}

type grantUserCodeRecord struct {
	Grant string `json:"grant"` // digest of the device code
}

type regCodeRecord struct {
	UserID    int64     `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
}

func grantKey(deviceDigest string) store.Key {
	return store.Key{Table: GrantTable, PK: "devicegrant#" + deviceDigest, SK: "grant"}
}

func grantUserCodeKey(code string) store.Key {
	return store.Key{Table: GrantTable, PK: "deviceusercode#" + code, SK: "usercode"}
}

func regCodeKey(code string) store.Key {
	return store.Key{Table: GrantTable, PK: "deviceregcode#" + grantDigest(code), SK: "regcode"}
}

// Start begins a grant (device_start). expiresIn is the agent's requested
// lifetime in seconds (30..3600; 0 means 900), interval its poll interval
// in seconds (1..3600; 0 means GrantConfig.Interval). Errors: apperr
// Invalid naming the field ("expires_in", "interval"); a plain (internal)
// error when no VerificationURI is configured or the store fails.
func (g *Grant) Start(ctx context.Context, expiresIn, interval int) (DeviceAuthorization, error) {
	if g.cfg.VerificationURI == "" {
		return DeviceAuthorization{}, errors.New("devices: the device grant has no verification URI configured")
	}
	switch {
	case expiresIn == 0:
		expiresIn = grantDefaultExpiresIn
	case expiresIn < grantMinExpiresIn || expiresIn > grantMaxExpiresIn:
		return DeviceAuthorization{}, apperr.InvalidField("expires_in", "must be between %d and %d seconds", grantMinExpiresIn, grantMaxExpiresIn)
	}
	switch {
	case interval == 0:
		interval = g.interval
	case interval < 1 || interval > grantMaxInterval:
		return DeviceAuthorization{}, apperr.InvalidField("interval", "must be between 1 and %d seconds", grantMaxInterval)
	}
	now := g.grantNow()
	expires := now.Add(time.Duration(expiresIn) * time.Second)
	for range grantAttempts {
		deviceCode, userCode := grantSecret(), grantNewUserCode()
		deviceDigest := grantDigest(deviceCode)
		gi, err := store.JSONItem(grantKey(deviceDigest), grantRecord{
			UserCode: userCode, Status: grantPending, Interval: interval, CreatedAt: now.UTC()})
		if err != nil {
			return DeviceAuthorization{}, err
		}
		ui, err := store.JSONItem(grantUserCodeKey(userCode), grantUserCodeRecord{Grant: deviceDigest})
		if err != nil {
			return DeviceAuthorization{}, err
		}
		gi.ExpiresAt, ui.ExpiresAt = expires, expires
		err = g.st.Transact(ctx, []store.Write{store.PutWrite(gi, store.IfAbsent), store.PutWrite(ui, store.IfAbsent)})
		if errors.Is(err, store.ErrConditionFailed) {
			continue // the user code is taken by a live grant: draw again
		}
		if err != nil {
			return DeviceAuthorization{}, fmt.Errorf("devices: store grant: %w", err)
		}
		shown := grantFormatUserCode(userCode)
		sep := "?"
		if strings.Contains(g.cfg.VerificationURI, "?") {
			sep = "&"
		}
		return DeviceAuthorization{
			DeviceCode:              deviceCode,
			UserCode:                shown,
			VerificationURI:         g.cfg.VerificationURI,
			VerificationURIComplete: g.cfg.VerificationURI + sep + "user_code=" + shown,
			Interval:                interval,
			ExpiresIn:               expiresIn,
		}, nil
	}
	return DeviceAuthorization{}, fmt.Errorf("devices: no free user code after %d attempts", grantAttempts)
}

// Verify records the signed-in user's decision on a user code
// (device_verify) and returns "approved" or "denied". The code is
// "XXXX-XXXX", case-insensitive, the dash optional. A code is bound to the
// first user who decides it and the decision is final: the same user
// repeating the same decision gets the same answer, anything else is a
// Conflict. Once the agent has collected an approval the code is gone
// (NotFound). Errors: Invalid (field "user_code": malformed), Unauthorized
// (userID is not a user's id), NotFound (unknown, expired or collected
// code), Conflict (already decided otherwise or by someone else),
// Unavailable (lost the race to concurrent writes too often).
func (g *Grant) Verify(ctx context.Context, userID int64, userCode string, approve bool) (string, error) {
	code, ok := grantNormalizeUserCode(userCode)
	if !ok {
		return "", apperr.InvalidField("user_code", "must be 8 letters or digits, as XXXX-XXXX")
	}
	if userID <= 0 {
		return "", apperr.New(apperr.Unauthorized, "sign in to approve or deny a device")
	}
	want := grantDenied
	if approve {
		want = grantApproved
	}
	notFound := func() error { return apperr.New(apperr.NotFound, "user code is unknown or expired") }
	for range grantAttempts {
		var uc grantUserCodeRecord
		ucIt, err := store.GetJSON(ctx, g.st, grantUserCodeKey(code), &uc)
		if errors.Is(err, store.ErrNotFound) {
			return "", notFound()
		}
		if err != nil {
			return "", fmt.Errorf("devices: read user code: %w", err)
		}
		now := g.grantNow()
		if grantExpired(ucIt, now) {
			return "", notFound()
		}
		var rec grantRecord
		it, err := store.GetJSON(ctx, g.st, grantKey(uc.Grant), &rec)
		if errors.Is(err, store.ErrNotFound) {
			return "", notFound()
		}
		if err != nil {
			return "", fmt.Errorf("devices: read grant: %w", err)
		}
		if grantExpired(it, now) || rec.UserCode != code {
			return "", notFound()
		}
		if rec.Status != grantPending {
			if rec.UserID == userID && rec.Status == want {
				return want, nil
			}
			return "", apperr.New(apperr.Conflict, "this device code has already been decided")
		}
		rec.Status, rec.UserID, rec.DecidedAt = want, userID, now.UTC()
		if it, err = grantEncode(it, rec); err != nil {
			return "", err
		}
		_, err = g.st.Put(ctx, it, store.IfVersion(it.Version))
		if errors.Is(err, store.ErrConditionFailed) {
			continue // a poll or another decision came first: look again
		}
		if err != nil {
			return "", fmt.Errorf("devices: store decision: %w", err)
		}
		return want, nil
	}
	return "", apperr.New(apperr.Unavailable, "the device code is busy; try again")
}

// Poll answers the agent (device_poll). While the grant is pending it
// answers "authorization_pending", or "slow_down" to a poll sooner than
// half the interval after the previous one (only pending grants are paced:
// a decided grant is answered at once). A denied grant answers
// "access_denied" until it expires. An approved grant answers "ready" once,
// with a new registration code, and is consumed in the same conditional
// transaction: a later poll with that device code is NotFound, exactly as
// for a code never issued. A grant past its expiry answers "expired" until
// the store purges it; then it is NotFound too. Errors: Invalid (field
// "device_code": empty), NotFound (unknown or consumed device code),
// Unavailable (lost the race to concurrent writes too often).
func (g *Grant) Poll(ctx context.Context, deviceCode string) (PollResult, error) {
	if deviceCode == "" {
		return PollResult{}, apperr.InvalidField("device_code", "is required")
	}
	key := grantKey(grantDigest(deviceCode))
	for range grantAttempts {
		var rec grantRecord
		it, err := store.GetJSON(ctx, g.st, key, &rec)
		if errors.Is(err, store.ErrNotFound) {
			return PollResult{}, apperr.New(apperr.NotFound, "device code is unknown or already used")
		}
		if err != nil {
			return PollResult{}, fmt.Errorf("devices: read grant: %w", err)
		}
		now := g.grantNow()
		if grantExpired(it, now) {
			return PollResult{Status: grantPollExpired}, nil
		}
		switch rec.Status {
		case grantDenied:
			return PollResult{Status: grantPollDenied}, nil
		case grantApproved:
			res, err := g.grantRedeem(ctx, it, rec, now)
			if errors.Is(err, store.ErrConditionFailed) {
				continue // another poll may have taken it: look again
			}
			return res, err
		}
		slow := !rec.LastPoll.IsZero() && now.Sub(rec.LastPoll) < time.Duration(rec.Interval)*time.Second/2
		rec.LastPoll = now.UTC()
		if it, err = grantEncode(it, rec); err != nil {
			return PollResult{}, err
		}
		_, err = g.st.Put(ctx, it, store.IfVersion(it.Version))
		switch {
		case errors.Is(err, store.ErrConditionFailed):
			if slow {
				return PollResult{Status: grantPollSlow}, nil
			}
			continue // decided, or polled concurrently: look again
		case err != nil:
			return PollResult{}, fmt.Errorf("devices: record poll: %w", err)
		case slow:
			return PollResult{Status: grantPollSlow}, nil
		}
		return PollResult{Status: grantPollPending}, nil
	}
	return PollResult{}, apperr.New(apperr.Unavailable, "the device grant is busy; poll again")
}

// grantRedeem mints a registration code for an approved grant and deletes
// the grant and its user code in one transaction conditional on the
// grant's version. ErrConditionFailed means someone else changed or took
// it first.
func (g *Grant) grantRedeem(ctx context.Context, it store.Item, rec grantRecord, now time.Time) (PollResult, error) {
	code := grantRegCodePrefix + grantSecret()
	rc, err := store.JSONItem(regCodeKey(code), regCodeRecord{UserID: rec.UserID, CreatedAt: now.UTC()})
	if err != nil {
		return PollResult{}, err
	}
	rc.ExpiresAt = now.Add(time.Duration(g.registrationTTL) * time.Second)
	err = g.st.Transact(ctx, []store.Write{
		store.DeleteWrite(it.Key, store.IfVersion(it.Version)),
		store.DeleteWrite(grantUserCodeKey(rec.UserCode), store.Always),
		store.PutWrite(rc, store.IfAbsent),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return PollResult{}, err
	}
	if err != nil {
		return PollResult{}, fmt.Errorf("devices: redeem grant: %w", err)
	}
	return PollResult{Status: grantPollReady, UserID: rec.UserID, RegistrationCode: code, RegistrationTTL: g.registrationTTL}, nil
}

// ConsumeRegistrationCode takes a registration code once and returns the
// user it was minted for. Errors: Invalid (field "registration_code"), one
// message for unknown, used and expired codes alike.
func (g *Grant) ConsumeRegistrationCode(ctx context.Context, code string) (int64, error) {
	bad := apperr.InvalidField("registration_code", "is invalid, expired or already used")
	if !strings.HasPrefix(code, grantRegCodePrefix) || len(code) > 128 {
		return 0, bad
	}
	var rec regCodeRecord
	it, err := store.GetJSON(ctx, g.st, regCodeKey(code), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return 0, bad
	}
	if err != nil {
		return 0, fmt.Errorf("devices: read registration code: %w", err)
	}
	if grantExpired(it, g.grantNow()) {
		return 0, bad
	}
	if err := g.st.Delete(ctx, it.Key, store.IfVersion(it.Version)); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return 0, bad
		}
		return 0, fmt.Errorf("devices: consume registration code: %w", err)
	}
	return rec.UserID, nil
}

func (g *Grant) grantNow() time.Time { return g.cfg.Now() }

// grantExpired reports whether an item is expired by the grant's clock,
// with the store's semantics (expired from its ExpiresAt second on). The
// store expires items by its own clock too; a test clock may run ahead.
func grantExpired(it store.Item, now time.Time) bool {
	return !it.ExpiresAt.IsZero() && !now.Before(it.ExpiresAt)
}

// grantEncode replaces an item's value with rec, keeping its key, version
// and expiry.
func grantEncode(it store.Item, rec grantRecord) (store.Item, error) {
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return store.Item{}, err
	}
	it.Value = next.Value
	return it, nil
}

// grantSeconds is d in whole seconds, rounded up, at least 1.
func grantSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// grantSecret returns 256 random bits, base64url without padding (43
// characters).
func grantSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// grantDigest is how device and registration codes are stored: SHA-256 in
// hex. The codes are 256-bit random, so a fast hash is enough.
func grantDigest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// grantNewUserCode draws 8 symbols of grantUserCodeAlphabet uniformly
// (rejection sampling), without the dash.
func grantNewUserCode() string {
	const n = len(grantUserCodeAlphabet)
	const limit = 256 - 256%n
	out := make([]byte, 0, 8)
	buf := make([]byte, 16)
	for len(out) < 8 {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if int(b) < limit && len(out) < 8 {
				out = append(out, grantUserCodeAlphabet[int(b)%n])
			}
		}
	}
	return string(out)
}

func grantFormatUserCode(code string) string { return code[:4] + "-" + code[4:] }

// grantNormalizeUserCode turns input into the stored form: upper case, no
// dash. It accepts 8 characters of [A-Za-z0-9], with one dash after the
// fourth or none, and surrounding spaces.
func grantNormalizeUserCode(s string) (string, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) == 9 && s[4] == '-' {
		s = s[:4] + s[5:]
	}
	if len(s) != 8 {
		return "", false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return "", false
		}
	}
	return s, true
}
