package passkey

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/store"
)

// BeginLogin starts a passkey login. With an email the options list that
// account's passkeys; with "" they list none and the browser offers the
// discoverable passkeys it holds for this site. An address without an
// active account or without passkeys gets options like a discoverable
// login whose ceremony always fails, so this answer never says whether an
// address is registered (the allow list of an address that does have
// passkeys still shows that it does: use the discoverable form to avoid
// that).
func (s *Service) BeginLogin(ctx context.Context, email string) (Ceremony, error) {
	if email == "" {
		assertion, data, err := s.wa.BeginDiscoverableLogin()
		if err != nil {
			return Ceremony{}, fmt.Errorf("passkey: begin login: %w", err)
		}
		return s.begin(ctx, ceremonyRecord{Kind: kindLogin, Data: *data}, assertion)
	}
	if len(email) > 254 {
		return Ceremony{}, apperr.InvalidField("email", "is too long")
	}
	u, err := s.userByEmail(ctx, email)
	if err != nil {
		return Ceremony{}, err
	}
	if u == nil || len(u.creds) == 0 || u.user.Status != identity.StatusActive {
		assertion, data, err := s.wa.BeginDiscoverableLogin()
		if err != nil {
			return Ceremony{}, fmt.Errorf("passkey: begin login: %w", err)
		}
		return s.begin(ctx, ceremonyRecord{Kind: kindLogin, Decoy: true, Data: *data}, assertion)
	}
	assertion, data, err := s.wa.BeginLogin(u)
	if err != nil {
		return Ceremony{}, fmt.Errorf("passkey: begin login: %w", err)
	}
	return s.begin(ctx, ceremonyRecord{Kind: kindLogin, UserID: u.user.ID, Data: *data}, assertion)
}

// userByEmail returns the account with that address, or nil.
func (s *Service) userByEmail(ctx context.Context, email string) (*waUser, error) {
	id, found, err := s.ids.UserIDByEmail(ctx, email)
	if err != nil || !found {
		return nil, err
	}
	u, err := s.loadUser(ctx, id, false)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil, nil
	}
	return u, err
}

// FinishLogin verifies the browser's assertion (a PublicKeyCredential as
// JSON) for a login ceremony and returns the user it proves; the caller
// opens the session. The credential's sign counter must grow (unless the
// authenticator keeps none): one that does not is treated as a cloned
// authenticator and refused. Errors: Invalid (ceremony_id, credential),
// Unauthorized (verification failed), Forbidden (account not active).
func (s *Service) FinishLogin(ctx context.Context, ceremonyID string, response []byte) (identity.User, error) {
	if err := checkResponse(response); err != nil {
		return identity.User{}, err
	}
	cer, err := s.take(ctx, ceremonyID, kindLogin, 0, "")
	if err != nil {
		return identity.User{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return identity.User{}, s.failed(ctx, "parse assertion", err)
	}
	if cer.Decoy {
		return identity.User{}, s.failed(ctx, "login", errors.New("the address has no passkey"))
	}
	var (
		u    *waUser
		cred *webauthn.Credential
	)
	if cer.UserID != 0 {
		if u, err = s.loadUser(ctx, cer.UserID, false); err != nil {
			if apperr.CodeOf(err) == apperr.NotFound {
				return identity.User{}, s.failed(ctx, "login", err)
			}
			return identity.User{}, err
		}
		cred, err = s.wa.ValidateLogin(u, cer.Data, parsed)
	} else {
		_, cred, err = s.wa.ValidatePasskeyLogin(func(rawID, _ []byte) (webauthn.User, error) {
			u, err = s.owner(ctx, rawID)
			return u, err
		}, cer.Data, parsed)
	}
	if err != nil {
		return identity.User{}, s.failed(ctx, "verify assertion", err)
	}
	if err := s.recordUse(ctx, u.user.ID, cred, parsed.Response.AuthenticatorData.Counter); err != nil {
		return identity.User{}, err
	}
	if u.user.Status != identity.StatusActive {
		return identity.User{}, apperr.New(apperr.Forbidden, "account is not activated yet: follow the link in the activation mail")
	}
	return u.user, nil
}

// owner loads the user who registered the credential id.
func (s *Service) owner(ctx context.Context, rawID []byte) (*waUser, error) {
	var rec ownerRecord
	if _, err := store.GetJSON(ctx, s.st, ownerKey(rawID), &rec); err != nil {
		return nil, err
	}
	u, err := s.loadUser(ctx, rec.UserID, false)
	if err != nil {
		return nil, err
	}
	if len(u.handle) == 0 {
		return nil, errors.New("user has no user handle")
	}
	return u, nil
}

// recordUse stores a verified assertion's sign counter, flags and time on
// the credential, refusing a counter that did not grow. It re-reads the
// credential so that concurrent logins cannot both pass one value.
func (s *Service) recordUse(ctx context.Context, userID int64, cred *webauthn.Credential, counter uint32) error {
	for attempt := 0; attempt < 5; attempt++ {
		var rec credRecord
		it, err := store.GetJSON(ctx, s.st, credKey(userID, cred.ID), &rec)
		if errors.Is(err, store.ErrNotFound) {
			return s.failed(ctx, "record use", errors.New("the credential was deleted meanwhile"))
		}
		if err != nil {
			return err
		}
		stored := rec.Credential.Authenticator.SignCount
		if (counter != 0 || stored != 0) && counter <= stored {
			s.log.WarnContext(ctx, "passkey: sign counter did not grow; possibly a cloned authenticator",
				"user_id", userID, "credential", base64.RawURLEncoding.EncodeToString(cred.ID),
				"stored", stored, "received", counter)
			return errVerify
		}
		now := s.now().UTC()
		rec.Credential.Authenticator.SignCount = counter
		rec.Credential.Authenticator.CloneWarning = false
		rec.Credential.Flags = cred.Flags
		rec.LastUsedAt = &now
		next, err := store.JSONItem(it.Key, rec)
		if err != nil {
			return err
		}
		next.Indexes = it.Indexes
		if _, err := s.st.Put(ctx, next, store.IfVersion(it.Version)); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrConditionFailed) {
			return fmt.Errorf("passkey: record use: %w", err)
		}
	}
	return apperr.New(apperr.Conflict, "the passkey is being used concurrently; try again")
}

// BeginStepUp starts re-proving a passkey in a logged-in session
// (sessionID is the session principal's ID). Errors: Forbidden (no
// session), Invalid (the user has no passkey).
func (s *Service) BeginStepUp(ctx context.Context, userID int64, sessionID string) (Ceremony, error) {
	if sessionID == "" {
		return Ceremony{}, apperr.New(apperr.Forbidden, "step-up needs a logged-in session")
	}
	u, err := s.loadUser(ctx, userID, false)
	if err != nil {
		return Ceremony{}, err
	}
	if len(u.creds) == 0 || len(u.handle) == 0 {
		return Ceremony{}, apperr.New(apperr.Invalid, "you have no passkey: register one first")
	}
	assertion, data, err := s.wa.BeginLogin(u)
	if err != nil {
		return Ceremony{}, fmt.Errorf("passkey: begin step-up: %w", err)
	}
	return s.begin(ctx, ceremonyRecord{Kind: kindStepUp, UserID: userID, SessionID: sessionID, Data: *data}, assertion)
}

// FinishStepUp verifies the assertion for a step-up ceremony of this user
// and session and records the step-up, valid for StepUpTTL; it returns
// when the step-up expires. Errors as FinishLogin.
func (s *Service) FinishStepUp(ctx context.Context, userID int64, sessionID, ceremonyID string, response []byte) (time.Time, error) {
	if err := checkResponse(response); err != nil {
		return time.Time{}, err
	}
	if sessionID == "" {
		return time.Time{}, apperr.New(apperr.Forbidden, "step-up needs a logged-in session")
	}
	cer, err := s.take(ctx, ceremonyID, kindStepUp, userID, sessionID)
	if err != nil {
		return time.Time{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return time.Time{}, s.failed(ctx, "parse assertion", err)
	}
	u, err := s.loadUser(ctx, userID, false)
	if err != nil {
		return time.Time{}, err
	}
	cred, err := s.wa.ValidateLogin(u, cer.Data, parsed)
	if err != nil {
		return time.Time{}, s.failed(ctx, "verify step-up", err)
	}
	if err := s.recordUse(ctx, userID, cred, parsed.Response.AuthenticatorData.Counter); err != nil {
		return time.Time{}, err
	}
	now := s.now().UTC()
	rec := stepUpRecord{UserID: userID, At: now, ExpiresAt: now.Add(StepUpTTL)}
	it, err := store.JSONItem(stepUpKey(sessionID), rec)
	if err != nil {
		return time.Time{}, err
	}
	it.ExpiresAt = rec.ExpiresAt
	if _, err := s.st.Put(ctx, it, store.Always); err != nil {
		return time.Time{}, fmt.Errorf("passkey: store step-up: %w", err)
	}
	return rec.ExpiresAt, nil
}

// StepUpValid reports whether the principal is a session that completed a
// step-up less than StepUpTTL ago. API keys never are; a store failure
// counts as no step-up (and is logged).
func (s *Service) StepUpValid(ctx context.Context, p identity.Principal) bool {
	if p.Kind != identity.KindSession || p.ID == "" {
		return false
	}
	var rec stepUpRecord
	if _, err := store.GetJSON(ctx, s.st, stepUpKey(p.ID), &rec); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.ErrorContext(ctx, "passkey: reading a step-up failed", "err", err)
		}
		return false
	}
	return rec.UserID == p.UserID && s.now().Before(rec.ExpiresAt)
}
