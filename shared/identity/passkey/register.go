package passkey

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// BeginRegistration starts registering a passkey for userID: creation
// options that exclude the user's registered passkeys, prefer a
// discoverable credential and user verification, and ask for no
// attestation. Errors: NotFound (no such user), Conflict (MaxCredentials
// reached).
func (s *Service) BeginRegistration(ctx context.Context, userID int64) (Ceremony, error) {
	u, err := s.loadUser(ctx, userID, true)
	if err != nil {
		return Ceremony{}, err
	}
	if len(u.creds) >= MaxCredentials {
		return Ceremony{}, apperr.New(apperr.Conflict, "you have %d passkeys, the most allowed: delete one first", len(u.creds))
	}
	exclude := webauthn.Credentials(u.WebAuthnCredentials()).CredentialDescriptors()
	creation, data, err := s.wa.BeginRegistration(u,
		webauthn.WithExclusions(exclude),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation))
	if err != nil {
		return Ceremony{}, fmt.Errorf("passkey: begin registration: %w", err)
	}
	return s.begin(ctx, ceremonyRecord{Kind: kindRegister, UserID: userID, Data: *data}, creation)
}

// FinishRegistration verifies the browser's answer (a PublicKeyCredential
// as JSON) to the ceremony and stores the new passkey. Errors: Invalid
// (ceremony_id, credential), Unauthorized (verification failed), Conflict
// (the passkey is registered already, or too many).
func (s *Service) FinishRegistration(ctx context.Context, userID int64, ceremonyID string, response []byte) (Credential, error) {
	if err := checkResponse(response); err != nil {
		return Credential{}, err
	}
	cer, err := s.take(ctx, ceremonyID, kindRegister, userID, "")
	if err != nil {
		return Credential{}, err
	}
	u, err := s.loadUser(ctx, userID, false)
	if err != nil {
		return Credential{}, err
	}
	if len(u.creds) >= MaxCredentials {
		return Credential{}, apperr.New(apperr.Conflict, "you have %d passkeys, the most allowed: delete one first", len(u.creds))
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return Credential{}, s.failed(ctx, "parse registration", err)
	}
	cred, err := s.wa.CreateCredential(u, cer.Data, parsed)
	if err != nil {
		return Credential{}, s.failed(ctx, "verify registration", err)
	}
	rec := credRecord{UserID: userID, Credential: *cred, CreatedAt: s.now().UTC()}
	credItem, err := store.JSONItem(credKey(userID, cred.ID), rec)
	if err != nil {
		return Credential{}, err
	}
	owner, err := store.JSONItem(ownerKey(cred.ID), ownerRecord{UserID: userID})
	if err != nil {
		return Credential{}, err
	}
	err = s.st.Transact(ctx, []store.Write{store.PutWrite(credItem, store.IfAbsent), store.PutWrite(owner, store.IfAbsent)})
	if errors.Is(err, store.ErrConditionFailed) {
		return Credential{}, apperr.New(apperr.Conflict, "this passkey is registered already")
	}
	if err != nil {
		return Credential{}, fmt.Errorf("passkey: store credential: %w", err)
	}
	s.log.InfoContext(ctx, "passkey: registered", "user_id", userID, "credential", base64.RawURLEncoding.EncodeToString(cred.ID))
	return rec.view(), nil
}

var errNoCredential = apperr.New(apperr.NotFound, "passkey not found")

// ListCredentials returns the user's passkeys.
func (s *Service) ListCredentials(ctx context.Context, userID int64) ([]Credential, error) {
	recs, err := s.credentials(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Credential, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.view())
	}
	return out, nil
}

// DeleteCredential removes one of the user's passkeys by its base64url id.
// Errors: NotFound (no such passkey of this user, whoever else owns it).
func (s *Service) DeleteCredential(ctx context.Context, userID int64, credentialID string) error {
	id, err := base64.RawURLEncoding.DecodeString(credentialID)
	if err != nil || len(id) == 0 {
		return errNoCredential
	}
	err = s.st.Transact(ctx, []store.Write{
		store.DeleteWrite(credKey(userID, id), store.IfExists),
		store.DeleteWrite(ownerKey(id), store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return errNoCredential
	}
	if err != nil {
		return fmt.Errorf("passkey: delete credential: %w", err)
	}
	return nil
}
