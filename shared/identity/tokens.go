package identity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/store"
)

// One-time token purposes.
const (
	purposeActivate = "activate"
	purposeReset    = "reset-confirm"
)

type oneTimeToken struct {
	Purpose string `json:"purpose"`
	UserID  int64  `json:"user_id"`
}

func tokenKey(secret string) store.Key {
	return store.Key{Table: Table, PK: "token#" + digest(secret), SK: "token"}
}

// issueToken stores a one-time token (only its digest) and returns it.
func (s *Service) issueToken(ctx context.Context, purpose string, userID int64, ttl time.Duration) (string, error) {
	secret := newSecret(32)
	it, err := store.JSONItem(tokenKey(secret), oneTimeToken{Purpose: purpose, UserID: userID})
	if err != nil {
		return "", err
	}
	it.ExpiresAt = s.now().Add(ttl)
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		return "", fmt.Errorf("identity: store token: %w", err)
	}
	return secret, nil
}

// consumeToken deletes a live token of the purpose and returns its user:
// each token works once. Unknown, expired, used or other-purpose tokens are
// all Invalid with one message.
func (s *Service) consumeToken(ctx context.Context, purpose, secret string) (int64, error) {
	bad := apperr.InvalidField("token", "is invalid, expired or already used")
	if secret == "" || len(secret) > 128 {
		return 0, bad
	}
	var tok oneTimeToken
	it, err := store.GetJSON(ctx, s.st, tokenKey(secret), &tok)
	if errors.Is(err, store.ErrNotFound) {
		return 0, bad
	}
	if err != nil {
		return 0, err
	}
	if tok.Purpose != purpose {
		return 0, bad
	}
	if err := s.st.Delete(ctx, it.Key, store.IfVersion(it.Version)); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return 0, bad
		}
		return 0, err
	}
	return tok.UserID, nil
}

func (s *Service) link(purpose, token string) string {
	return s.cfg.PublicURL + "/auth/general?action=" + purpose + "&token=" + url.QueryEscape(token)
}

func (s *Service) sendActivation(ctx context.Context, u User) error {
	token, err := s.issueToken(ctx, purposeActivate, u.ID, s.cfg.ActivationTTL)
	if err != nil {
		return err
	}
	link := s.link(purposeActivate, token)
	return s.mailOut(ctx, mail.Message{To: u.Email, Subject: "Activate your certfleet account", Link: link,
		Text: "Welcome to certfleet.\n\nOpen this link to activate your account (it works once, for " +
			s.cfg.ActivationTTL.String() + "):\n\n" + link + "\n\nIf you did not register, ignore this mail.\n"})
}

// Activate consumes an activation token and activates its account.
func (s *Service) Activate(ctx context.Context, token string) (User, error) {
	id, err := s.consumeToken(ctx, purposeActivate, token)
	if err != nil {
		return User{}, err
	}
	return s.updateUser(ctx, id, func(r *userRecord) { r.Status = StatusActive })
}

// RequestReset mails a password-reset link if email belongs to an account.
// It answers the same whether or not it does, so it reveals nothing.
func (s *Service) RequestReset(ctx context.Context, email string) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	id, err := s.userIDByEmail(ctx, e)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	token, err := s.issueToken(ctx, purposeReset, id, s.cfg.ResetTTL)
	if err != nil {
		return err
	}
	link := s.link(purposeReset, token)
	return s.mailOut(ctx, mail.Message{To: e, Subject: "Reset your certfleet password", Link: link,
		Text: "Someone asked to reset the password of this certfleet account.\n\nPOST this token with a new password to /auth/general " +
			"(action reset-confirm) within " + s.cfg.ResetTTL.String() + ":\n\n" + link +
			"\n\nIf it was not you, ignore this mail; your password stays as it is.\n"})
}

// ConfirmReset consumes a reset token, sets the new password, activates the
// account (the mailbox is proven) and revokes every session of the user.
func (s *Service) ConfirmReset(ctx context.Context, token, password string) (User, error) {
	if err := CheckPassword(password); err != nil {
		return User{}, err
	}
	id, err := s.consumeToken(ctx, purposeReset, token)
	if err != nil {
		return User{}, err
	}
	hash := hashPassword(password, s.hash)
	u, err := s.updateUser(ctx, id, func(r *userRecord) { r.PasswordHash, r.Status = hash, StatusActive })
	if err != nil {
		return User{}, err
	}
	return u, s.RevokeSessions(ctx, id)
}
