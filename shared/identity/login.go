package identity

import (
	"context"
	"errors"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// Failed logins are throttled per account and per client address, so
// neither guessing one account's password nor spraying many accounts from
// one address gets far.
const (
	loginWindow          = 15 * time.Minute
	loginFailsPerAccount = 5
	loginFailsPerIP      = 30
)

// Login checks the credentials and opens a session. After too many recent
// failures for the account or the address it refuses with RateLimit (and a
// retry time) before looking at the password.
func (s *Service) Login(ctx context.Context, email, password, clientIP string) (User, Session, error) {
	acct, byIP := "acct:"+email, "ip:"+clientIP
	if e, err := NormalizeEmail(email); err == nil {
		acct = "acct:" + e
	}
	for _, c := range []struct {
		l   *ratelimit.Limiter
		key string
	}{{s.accountFails, acct}, {s.ipFails, byIP}} {
		v, err := c.l.Check(ctx, c.key)
		if err != nil {
			return User{}, Session{}, err
		}
		if !v.Allowed {
			return User{}, Session{}, &ThrottledError{RetryAfter: v.RetryAfter}
		}
	}
	u, err := s.Authenticate(ctx, email, password)
	if err != nil {
		if errors.Is(err, errBadLogin) {
			for _, hit := range []func() error{
				func() error { _, err := s.accountFails.Hit(ctx, acct); return err },
				func() error { _, err := s.ipFails.Hit(ctx, byIP); return err },
			} {
				if herr := hit(); herr != nil {
					s.log.Warn("identity: counting a failed login failed", "err", herr)
				}
			}
		}
		return User{}, Session{}, err
	}
	sess, err := s.StartSession(ctx, u)
	return u, sess, err
}

// ThrottledError is a refusal for too many failed logins.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return "too many failed logins; try again later"
}

// Unwrap gives the application error for the envelope.
func (e *ThrottledError) Unwrap() error {
	return apperr.New(apperr.RateLimit, "too many failed logins; try again in %s", e.RetryAfter.Round(time.Second))
}
