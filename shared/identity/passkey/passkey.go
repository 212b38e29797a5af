// Package passkey is WebAuthn for certfleet accounts: registering passkeys
// to a logged-in user, logging in with one (by email or discoverable), and
// a short-lived step-up that a session earns by proving a passkey again.
//
// Verification is go-webauthn's; this package keeps its state in the
// identity table through the store port:
//
//	webauthn#<user id>      / handle          the user's random WebAuthn user handle
//	webauthn#<user id>      / cred#<key>      one credential (public key, sign counter, flags)
//	webauthncred#<key>      / owner           which user a credential id belongs to
//	webauthnceremony#<hash> / ceremony        a pending ceremony (expires after 5 minutes)
//	webauthnstepup#<session>/ stepup          a session's step-up (expires after 10 minutes)
//
// where <key> is the base64url SHA-256 of the credential id (credential ids
// may be up to 1023 bytes, longer than a sort key may be) and <hash> the
// SHA-256 of the ceremony id. A ceremony is consumed by its first finish,
// successful or not, and is bound to its user (and, for step-up, to its
// session).
//
// Errors are application errors (package apperr): a missing, expired, used
// or foreign ceremony is Invalid naming "ceremony_id"; anything the
// verification rejects is Unauthorized with the message "passkey
// verification failed" and nothing more (the detail is logged).
package passkey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/store"
)

// Lifetimes and bounds.
const (
	// CeremonyTTL is how long a begun ceremony may be finished.
	CeremonyTTL = 5 * time.Minute
	// StepUpTTL is how long a step-up lasts.
	StepUpTTL = 10 * time.Minute
	// MaxCredentials is how many passkeys one user may register.
	MaxCredentials = 20
)

// Config describes the relying party.
type Config struct {
	// RPID is the relying party id: the host name the passkeys are bound
	// to (the host of the public URL), without scheme or port.
	RPID string
	// RPDisplayName is shown by authenticators; "certfleet" when empty.
	RPDisplayName string
	// Origins are the web origins allowed in client data, e.g.
	// https://certs.example.com (scheme, host and port only).
	Origins []string
	// Now is the clock for ceremony and step-up lifetimes; time.Now when
	// nil. Expiring items also expire by the store's own clock, so a test
	// clock should stay near the real one (move it forward, not back).
	Now func() time.Time
	// Log receives the detail of failed verifications; nothing when nil.
	Log *slog.Logger
}

// Service registers and verifies passkeys. Safe for concurrent use.
type Service struct {
	st  store.Store
	ids *identity.Service
	wa  *webauthn.WebAuthn
	cfg Config
	log *slog.Logger
}

// New checks the configuration and returns the service.
func New(st store.Store, ids *identity.Service, cfg Config) (*Service, error) {
	if st == nil || ids == nil {
		return nil, errors.New("passkey: a store and an identity service are required")
	}
	if cfg.RPID == "" || strings.ContainsAny(cfg.RPID, ":/?#@ ") {
		return nil, fmt.Errorf("passkey: RPID %q must be a bare host name such as certs.example.com", cfg.RPID)
	}
	if len(cfg.Origins) == 0 {
		return nil, errors.New("passkey: at least one origin is required")
	}
	for _, o := range cfg.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("passkey: origin %q must be scheme://host[:port]", o)
		}
	}
	if cfg.RPDisplayName == "" {
		cfg.RPDisplayName = "certfleet"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	origins := make([]string, len(cfg.Origins))
	for i, o := range cfg.Origins {
		origins[i] = strings.TrimSuffix(o, "/")
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: cfg.RPDisplayName,
		RPOrigins:     origins,
		// A cross-origin frame must sit inside one of our own origins.
		RPTopOriginVerificationMode: protocol.TopOriginImplicitVerificationMode,
		AttestationPreference:       protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementPreferred,
			RequireResidentKey: protocol.ResidentKeyNotRequired(),
			UserVerification:   protocol.VerificationPreferred,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: CeremonyTTL, TimeoutUVD: CeremonyTTL},
			Registration: webauthn.TimeoutConfig{Timeout: CeremonyTTL, TimeoutUVD: CeremonyTTL},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("passkey: %w", err)
	}
	return &Service{st: st, ids: ids, wa: wa, cfg: cfg, log: log}, nil
}

func (s *Service) now() time.Time { return s.cfg.Now() }

// Ceremony is a begun ceremony: Options go to the browser as they are
// (navigator.credentials.create or .get), CeremonyID comes back with its
// answer.
type Ceremony struct {
	CeremonyID string          `json:"ceremony_id"`
	Options    json.RawMessage `json:"options"`
}

// Credential describes a registered passkey to its owner.
type Credential struct {
	// ID is the credential id, base64url without padding, as browsers
	// show it; DeleteCredential takes it.
	ID              string     `json:"id"`
	CreatedAt       time.Time  `json:"created_at"`
	LastUsedAt      *time.Time `json:"last_used_at,omitempty"`
	Transports      []string   `json:"transports"`
	AttestationType string     `json:"attestation_type"`
	AAGUID          string     `json:"aaguid,omitempty"`
	BackupEligible  bool       `json:"backup_eligible"`
	BackedUp        bool       `json:"backed_up"`
	UserVerified    bool       `json:"user_verified"`
}

var (
	errVerify = apperr.New(apperr.Unauthorized, "passkey verification failed")
	// errCeremony is one answer for every unusable ceremony id, so a
	// caller learns nothing about other users' ceremonies.
	errCeremony = apperr.InvalidField("ceremony_id", "is unknown, expired or already used; begin again")
)

// failed logs why a verification failed and returns the one answer.
func (s *Service) failed(ctx context.Context, step string, err error) error {
	attrs := []any{"step", step, "err", err}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		attrs = append(attrs, "details", pe.Details, "info", pe.DevInfo)
	}
	s.log.InfoContext(ctx, "passkey: verification failed", attrs...)
	return errVerify
}

// --- keys -----------------------------------------------------------------

func userPK(userID int64) string { return "webauthn#" + strconv.FormatInt(userID, 10) }

func handleKey(userID int64) store.Key {
	return store.Key{Table: identity.Table, PK: userPK(userID), SK: "handle"}
}

// credKeyID is the fixed-length form of a credential id used in keys.
func credKeyID(id []byte) string {
	sum := sha256.Sum256(id)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

const credPrefix = "cred#"

func credKey(userID int64, id []byte) store.Key {
	return store.Key{Table: identity.Table, PK: userPK(userID), SK: credPrefix + credKeyID(id)}
}

func ownerKey(id []byte) store.Key {
	return store.Key{Table: identity.Table, PK: "webauthncred#" + credKeyID(id), SK: "owner"}
}

func ceremonyKey(id string) store.Key {
	sum := sha256.Sum256([]byte(id))
	return store.Key{Table: identity.Table, PK: "webauthnceremony#" + hex.EncodeToString(sum[:]), SK: "ceremony"}
}

func stepUpKey(sessionID string) store.Key {
	return store.Key{Table: identity.Table, PK: "webauthnstepup#" + sessionID, SK: "stepup"}
}

// --- records --------------------------------------------------------------

type handleRecord struct {
	Handle []byte `json:"handle"`
}

type credRecord struct {
	UserID     int64               `json:"user_id"`
	Credential webauthn.Credential `json:"credential"`
	CreatedAt  time.Time           `json:"created_at"`
	LastUsedAt *time.Time          `json:"last_used_at,omitempty"`
}

type ownerRecord struct {
	UserID int64 `json:"user_id"`
}

// Ceremony kinds.
const (
	kindRegister = "register"
	kindLogin    = "login"
	kindStepUp   = "stepup"
)

type ceremonyRecord struct {
	Kind      string    `json:"kind"`
	UserID    int64     `json:"user_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// Decoy marks a login begun for an address without passkeys: it
	// looks like any other and always fails.
	Decoy bool                 `json:"decoy,omitempty"`
	Data  webauthn.SessionData `json:"data"`
}

type stepUpRecord struct {
	UserID    int64     `json:"user_id"`
	At        time.Time `json:"at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (r credRecord) view() Credential {
	c := r.Credential
	v := Credential{
		ID:              base64.RawURLEncoding.EncodeToString(c.ID),
		CreatedAt:       r.CreatedAt,
		LastUsedAt:      r.LastUsedAt,
		Transports:      make([]string, 0, len(c.Transport)),
		AttestationType: c.AttestationType,
		BackupEligible:  c.Flags.BackupEligible,
		BackedUp:        c.Flags.BackupState,
		UserVerified:    c.Flags.UserVerified,
	}
	for _, t := range c.Transport {
		v.Transports = append(v.Transports, string(t))
	}
	if len(c.Authenticator.AAGUID) == 16 && !allZero(c.Authenticator.AAGUID) {
		a := hex.EncodeToString(c.Authenticator.AAGUID)
		v.AAGUID = a[:8] + "-" + a[8:12] + "-" + a[12:16] + "-" + a[16:20] + "-" + a[20:]
	}
	return v
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// --- the WebAuthn user ----------------------------------------------------

// waUser is an account as go-webauthn sees it.
type waUser struct {
	user   identity.User
	handle []byte
	creds  []credRecord
}

func (u *waUser) WebAuthnID() []byte { return u.handle }
func (u *waUser) WebAuthnName() string {
	if u.user.Email != "" {
		return u.user.Email
	}
	return u.user.Username
}
func (u *waUser) WebAuthnDisplayName() string {
	if u.user.Name != "" {
		return u.user.Name
	}
	return u.WebAuthnName()
}
func (u *waUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(u.creds))
	for i, c := range u.creds {
		out[i] = c.Credential
	}
	return out
}

// handle returns the user's WebAuthn user handle, creating it if create
// (else nil when there is none).
// It is random (the spec forbids personal data in it) and never changes.
func (s *Service) handle(ctx context.Context, userID int64, create bool) ([]byte, error) {
	var rec handleRecord
	_, err := store.GetJSON(ctx, s.st, handleKey(userID), &rec)
	if err == nil {
		return rec.Handle, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if !create {
		return nil, nil // no passkey was ever registered
	}
	rec.Handle = make([]byte, 32)
	if _, err := rand.Read(rec.Handle); err != nil {
		return nil, err
	}
	it, err := store.JSONItem(handleKey(userID), rec)
	if err != nil {
		return nil, err
	}
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return s.handle(ctx, userID, false) // made concurrently
		}
		return nil, fmt.Errorf("passkey: store user handle: %w", err)
	}
	return rec.Handle, nil
}

// credentials lists the user's credential records.
func (s *Service) credentials(ctx context.Context, userID int64) ([]credRecord, error) {
	var out []credRecord
	cursor := ""
	for {
		page, err := s.st.Query(ctx, store.Query{Table: identity.Table, PK: userPK(userID), SKPrefix: credPrefix, Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("passkey: list credentials: %w", err)
		}
		for _, it := range page.Items {
			var rec credRecord
			if err := store.DecodeJSON(it, &rec); err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
		if cursor = page.Cursor; cursor == "" {
			return out, nil
		}
	}
}

// loadUser gathers what go-webauthn needs about a user. create makes the
// user handle when the user has none yet (registration only).
func (s *Service) loadUser(ctx context.Context, userID int64, create bool) (*waUser, error) {
	u, err := s.ids.GetUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	h, err := s.handle(ctx, userID, create)
	if err != nil {
		return nil, err
	}
	creds, err := s.credentials(ctx, userID)
	if err != nil {
		return nil, err
	}
	return &waUser{user: u, handle: h, creds: creds}, nil
}

// --- ceremonies -----------------------------------------------------------

// begin stores a ceremony and returns its id with the browser's options.
func (s *Service) begin(ctx context.Context, rec ceremonyRecord, options any) (Ceremony, error) {
	opts, err := json.Marshal(options)
	if err != nil {
		return Ceremony{}, fmt.Errorf("passkey: encode options: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Ceremony{}, err
	}
	id := base64.RawURLEncoding.EncodeToString(raw)
	rec.ExpiresAt = s.now().Add(CeremonyTTL).UTC()
	it, err := store.JSONItem(ceremonyKey(id), rec)
	if err != nil {
		return Ceremony{}, err
	}
	it.ExpiresAt = rec.ExpiresAt
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		return Ceremony{}, fmt.Errorf("passkey: store ceremony: %w", err)
	}
	return Ceremony{CeremonyID: id, Options: opts}, nil
}

// take consumes a ceremony of the given kind. For register and step-up it
// must belong to userID (and step-up to sessionID); a ceremony of someone
// else is left alone and answered like an unknown one.
func (s *Service) take(ctx context.Context, id, kind string, userID int64, sessionID string) (ceremonyRecord, error) {
	var rec ceremonyRecord
	if id == "" {
		return rec, apperr.InvalidField("ceremony_id", "is required")
	}
	if len(id) > 128 {
		return rec, errCeremony
	}
	it, err := store.GetJSON(ctx, s.st, ceremonyKey(id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, errCeremony
	}
	if err != nil {
		return rec, err
	}
	if rec.Kind != kind || (kind != kindLogin && rec.UserID != userID) || rec.SessionID != sessionID {
		return rec, errCeremony
	}
	// Consume before looking at the expiry or the answer: one try each.
	if err := s.st.Delete(ctx, it.Key, store.IfVersion(it.Version)); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return rec, errCeremony
		}
		return rec, fmt.Errorf("passkey: consume ceremony: %w", err)
	}
	if !s.now().Before(rec.ExpiresAt) {
		return rec, errCeremony
	}
	return rec, nil
}

// checkResponse rejects an empty answer before the library sees it.
func checkResponse(response []byte) error {
	if len(strings.TrimSpace(string(response))) == 0 || string(response) == "null" {
		return apperr.InvalidField("credential", "is required: the browser's PublicKeyCredential as JSON")
	}
	return nil
}
