package httpapi

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// Authenticator resolves credentials to principals (identity.Service).
type Authenticator interface {
	SessionPrincipal(ctx context.Context, token string) (identity.Principal, error)
	APIKeyPrincipal(ctx context.Context, token string) (identity.Principal, error)
	WorkerPrincipal(ctx context.Context, token string) (identity.Principal, error)
}

// Guard authenticates, rate-limits and authorizes requests. Routes declare
// what they need by the wrapper they use; handlers then read the caller
// with identity.PrincipalFrom and the target user with TargetUser.
type Guard struct {
	Auth Authenticator
	// Limiter counts requests per principal (IP when anonymous).
	Limiter *ratelimit.Limiter
	// CookieName is the session cookie (cjj365 by default).
	CookieName string
	// Errors writes the guard's refusals (401, 403, 429, 400 for a bad
	// user id); nil means the cert-ctrl envelope (WriteErrorBody). A
	// dialect with its own envelope uses a copy of the guard with its
	// writer: see WithErrors.
	Errors func(w http.ResponseWriter, r *http.Request, err error, params map[string]any)
}

// WithErrors returns a copy of the guard that writes refusals with fn.
func (g *Guard) WithErrors(fn func(w http.ResponseWriter, r *http.Request, err error, params map[string]any)) *Guard {
	c := *g
	c.Errors = fn
	return &c
}

func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, err error, params map[string]any) {
	if g.Errors != nil {
		g.Errors(w, r, err, params)
		return
	}
	WriteErrorBody(w, r, err, params)
}

// Scope is what a user-scoped route does, for API key permissions. The
// zero Scope needs no permission (any key of the user may call it).
type Scope struct {
	ObType string
	Action string
	// ObIDParam names the path parameter holding the object id, if the
	// route is about one object.
	ObIDParam string
	// SessionOnly refuses API keys (e.g. managing API keys themselves).
	SessionOnly bool
}

type targetUserKey struct{}

// TargetUser returns the user a user-scoped route acts on: the {user_id}
// of /apiv1/users/{user_id}/..., or the caller for /apiv1/me/....
func TargetUser(ctx context.Context) int64 {
	id, _ := ctx.Value(targetUserKey{}).(int64)
	return id
}

// UserPathParam is the path parameter of user-scoped routes; the isolation
// sweep finds those routes by it.
const UserPathParam = "user_id"

// User guards a user-scoped route: a session or API key is required, the
// caller must be the target user (or an admin session), and an API key must
// hold scope. Failures: 401, 429, 400 for a malformed user id, 403.
func (g *Guard) User(scope Scope, h http.Handler) http.Handler {
	return g.authenticated(func(w http.ResponseWriter, r *http.Request, p identity.Principal) {
		target := p.UserID
		if r.PathValue(UserPathParam) != "" {
			id, err := PathID(r, UserPathParam)
			if err != nil {
				g.refuse(w, r, err, nil)
				return
			}
			target = id
		}
		switch {
		case scope.SessionOnly && p.Kind != identity.KindSession:
			g.refuse(w, r, apperr.New(apperr.Forbidden, "this route needs a logged-in session, not an API key"), nil)
			return
		case !p.CanActFor(target):
			g.refuse(w, r, apperr.New(apperr.Forbidden, "you may not act on another user's objects"), nil)
			return
		case scope.ObType != "" && !p.Allows(scope.ObType, r.PathValue(scope.ObIDParam), scope.Action):
			g.refuse(w, r, apperr.New(apperr.Forbidden, "API key lacks permission %s:%s", scope.ObType, scope.Action), nil)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetUserKey{}, target)))
	})
}

// Admin guards an admin route: an admin session is required.
func (g *Guard) Admin(h http.Handler) http.Handler {
	return g.authenticated(func(w http.ResponseWriter, r *http.Request, p identity.Principal) {
		if !p.Admin {
			g.refuse(w, r, apperr.New(apperr.Forbidden, "this route is for administrators"), nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Worker guards an internal route of the issuance worker: only the worker
// token (identity.Service.WorkerToken) passes. A {user_id} in the path
// becomes the target user. Failures: 401, 400 for a malformed user id,
// 403 for any other caller.
func (g *Guard) Worker(h http.Handler) http.Handler {
	return g.authenticated(func(w http.ResponseWriter, r *http.Request, p identity.Principal) {
		if p.Kind != identity.KindWorker {
			g.refuse(w, r, apperr.New(apperr.Forbidden, "this route is internal to the issuance worker"), nil)
			return
		}
		ctx := r.Context()
		if r.PathValue(UserPathParam) != "" {
			id, err := PathID(r, UserPathParam)
			if err != nil {
				g.refuse(w, r, err, nil)
				return
			}
			ctx = context.WithValue(ctx, targetUserKey{}, id)
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Public rate-limits an anonymous route by client IP; a caller that does
// present credentials is counted as itself.
func (g *Guard) Public(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := "ip:" + ClientIP(r)
		if p, err := g.principal(r); err == nil {
			key = string(p.Kind) + ":" + p.ID
			r = r.WithContext(identity.WithPrincipal(r.Context(), p))
		}
		if g.limited(w, r, key) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authenticated resolves the principal (401 without one), rate-limits it
// and calls next with it in the context.
func (g *Guard) authenticated(next func(http.ResponseWriter, *http.Request, identity.Principal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := g.principal(r)
		if err != nil {
			g.refuse(w, r, err, nil)
			return
		}
		if g.limited(w, r, string(p.Kind)+":"+p.ID) {
			return
		}
		next(w, r.WithContext(identity.WithPrincipal(r.Context(), p)), p)
	})
}

var errNoCredentials = apperr.New(apperr.Unauthorized, "log in, or send Authorization: Bearer ak_... with an API key")

// principal reads a Bearer API key, else the session cookie.
func (g *Guard) principal(r *http.Request) (identity.Principal, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		switch {
		case ok && identity.IsAPIKeyToken(token):
			return g.Auth.APIKeyPrincipal(r.Context(), token)
		case ok && identity.IsWorkerToken(token):
			return g.Auth.WorkerPrincipal(r.Context(), token)
		}
		return identity.Principal{}, apperr.New(apperr.Unauthorized, "Authorization must be Bearer ak_... (an API key)")
	}
	c, err := r.Cookie(g.CookieName)
	if err != nil || c.Value == "" {
		return identity.Principal{}, errNoCredentials
	}
	return g.Auth.SessionPrincipal(r.Context(), c.Value)
}

// limited counts the request against key and answers 429 when over.
func (g *Guard) limited(w http.ResponseWriter, r *http.Request, key string) bool {
	if g.Limiter == nil {
		return false
	}
	v, err := g.Limiter.Hit(r.Context(), key)
	if err != nil {
		// An unavailable counter must not take the API down with it.
		LoggerFrom(r.Context()).Warn("rate limit check failed; request allowed", "err", err)
		return false
	}
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(g.Limiter.Limit()))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(v.Remaining))
	if v.Allowed {
		return false
	}
	secs := RetrySeconds(v.RetryAfter)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	g.refuse(w, r, apperr.New(apperr.RateLimit, "too many requests: at most %d per minute", g.Limiter.Limit()),
		map[string]any{"retry_after": secs})
	return true
}

// RetrySeconds is a Retry-After value: whole seconds, rounded up (the
// device agent reads only integers).
func RetrySeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// ClientIP is the caller's address: the peer of the connection, or in
// Lambda the API Gateway source IP (which the proxy puts in RemoteAddr).
func ClientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// PathID reads a path parameter that holds an integer id; anything but a
// positive integer is Invalid naming the parameter.
func PathID(r *http.Request, param string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(param), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.InvalidField(param, "must be a positive integer")
	}
	return id, nil
}
