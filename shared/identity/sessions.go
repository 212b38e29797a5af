package identity

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

type sessionRecord struct {
	UserID    int64     `json:"user_id"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

// Session is a new or refreshed browser session: Token goes into the
// cookie and is never stored (only its digest is).
type Session struct {
	Token     string
	ExpiresAt time.Time
}

func sessionKey(token string) store.Key {
	return store.Key{Table: Table, PK: "session#" + digest(token), SK: "session"}
}

func sessionsOf(userID int64) string { return "sessions#" + strconv.FormatInt(userID, 10) }

// StartSession opens a session for u.
func (s *Service) StartSession(ctx context.Context, u User) (Session, error) {
	token := newSecret(32)
	it, err := store.JSONItem(sessionKey(token), sessionRecord{UserID: u.ID, Admin: u.IsAdmin(), CreatedAt: s.now().UTC()})
	if err != nil {
		return Session{}, err
	}
	expires := s.now().Add(s.cfg.SessionTTL).Truncate(time.Second)
	it.ExpiresAt = expires
	it.Indexes = map[string]store.IndexKey{gsi1: {PK: sessionsOf(u.ID), SK: it.PK}}
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		return Session{}, fmt.Errorf("identity: store session: %w", err)
	}
	return Session{Token: token, ExpiresAt: expires}, nil
}

var errNoSession = apperr.New(apperr.Unauthorized, "session is missing, expired or logged out; log in again")

// SessionPrincipal resolves a session token with one store read.
func (s *Service) SessionPrincipal(ctx context.Context, token string) (Principal, error) {
	if token == "" || len(token) > 128 {
		return Principal{}, errNoSession
	}
	var rec sessionRecord
	it, err := store.GetJSON(ctx, s.st, sessionKey(token), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, errNoSession
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Kind: KindSession, UserID: rec.UserID, Admin: rec.Admin, ID: it.PK}, nil
}

// RefreshSession replaces a live session with a new one (new token, new
// expiry, current roles); the old token stops working.
func (s *Service) RefreshSession(ctx context.Context, token string) (Session, User, error) {
	p, err := s.SessionPrincipal(ctx, token)
	if err != nil {
		return Session{}, User{}, err
	}
	u, err := s.GetUser(ctx, p.UserID)
	if err != nil {
		return Session{}, User{}, err
	}
	next, err := s.StartSession(ctx, u)
	if err != nil {
		return Session{}, User{}, err
	}
	return next, u, s.EndSession(ctx, token)
}

// EndSession revokes a session server-side; an unknown token is fine.
func (s *Service) EndSession(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	return s.st.Delete(ctx, sessionKey(token), store.Always)
}

// RevokeSessions ends every session of the user.
func (s *Service) RevokeSessions(ctx context.Context, userID int64) error {
	cursor := ""
	for {
		page, err := s.st.Query(ctx, store.Query{Table: Table, Index: gsi1, PK: sessionsOf(userID), Cursor: cursor})
		if err != nil {
			return fmt.Errorf("identity: list sessions: %w", err)
		}
		for _, it := range page.Items {
			if err := s.st.Delete(ctx, it.Key, store.Always); err != nil {
				return fmt.Errorf("identity: revoke session: %w", err)
			}
		}
		if cursor = page.Cursor; cursor == "" {
			return nil
		}
	}
}
