package certctrl

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
)

// Sessions is the cookie side of the auth routes.
type Sessions struct {
	// CookieName is the session cookie's name (cjj365).
	CookieName string
	// Secure marks the cookie Secure; false only for a local shape on
	// plain http.
	Secure bool
}

func (c Sessions) set(w http.ResponseWriter, s identity.Session) {
	http.SetCookie(w, &http.Cookie{Name: c.CookieName, Value: s.Token, Path: "/", Expires: s.ExpiresAt,
		MaxAge: int(time.Until(s.ExpiresAt).Seconds()), HttpOnly: true, Secure: c.Secure, SameSite: http.SameSiteLaxMode})
}

func (c Sessions) clear(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: c.CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: c.Secure, SameSite: http.SameSiteLaxMode})
}

func (c Sessions) token(r *http.Request) string {
	if ck, err := r.Cookie(c.CookieName); err == nil {
		return ck.Value
	}
	return ""
}

// authRoutes serves /auth/*: accounts, login and sessions.
type authRoutes struct {
	ids     *identity.Service
	devices *devicetoken.Service
	guard   *httpapi.Guard
	cookies Sessions
}

// generalRequest is the body of POST /auth/general.
type generalRequest struct {
	Action   string `json:"action"`
	Email    string `json:"email"`
	Password string `json:"password"`
	Username string `json:"username"`
	Name     string `json:"name"`
	Token    string `json:"token"`
}

type sessionView struct {
	ExpiresAt time.Time `json:"expires_at"`
}

func (a authRoutes) routes() []httpapi.Route {
	g := a.guard
	return []httpapi.Route{
		{Method: "GET", Path: "/auth/general", Handler: g.Public(httpapi.Endpoint(a.check))},
		{Method: "POST", Path: "/auth/general", Handler: g.Public(httpapi.Endpoint(a.general))},
		{Method: "GET", Path: "/auth/status", Handler: g.Public(httpapi.Endpoint(a.status))},
		{Method: "POST", Path: "/auth/logout", Handler: g.Public(httpapi.Endpoint(a.logout))},
		{Method: "POST", Path: "/auth/refresh", Handler: g.Public(http.HandlerFunc(a.refresh))},
		{Method: "GET", Path: "/auth/profile", Handler: g.User(httpapi.Scope{}, httpapi.Endpoint(a.profile))},
		{Method: "GET", Path: "/auth/third-party-bindings", Handler: g.User(httpapi.Scope{}, httpapi.Endpoint(
			func(http.ResponseWriter, *http.Request) (int, any, error) { return http.StatusOK, []any{}, nil }))},
	}
}

// check answers GET /auth/general: availability of ?email= / ?username=,
// or the activation link of the mails (?action=activate&token=).
func (a authRoutes) check(w http.ResponseWriter, r *http.Request) (int, any, error) {
	q := r.URL.Query()
	switch q.Get("action") {
	case "activate":
		u, err := a.ids.Activate(r.Context(), q.Get("token"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"activated": true, "user": u}, nil
	case "":
		avail, err := a.ids.Available(r.Context(), q.Get("email"), q.Get("username"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, avail, nil
	default:
		return 0, nil, apperr.InvalidField("action", "GET /auth/general takes action=activate or email=/username= to check")
	}
}

// general answers POST /auth/general by its action.
func (a authRoutes) general(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req generalRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	switch req.Action {
	case "register":
		u, err := a.ids.Register(ctx, identity.Registration{Email: req.Email, Password: req.Password, Username: req.Username, Name: req.Name})
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, map[string]any{"user": u, "activation": "an activation link was mailed to " + u.Email}, nil
	case "login":
		u, sess, err := a.ids.Login(ctx, req.Email, req.Password, httpapi.ClientIP(r))
		var throttled *identity.ThrottledError
		if errors.As(err, &throttled) {
			w.Header().Set("Retry-After", strconv.Itoa(httpapi.RetrySeconds(throttled.RetryAfter)))
		}
		if err != nil {
			return 0, nil, err
		}
		a.cookies.set(w, sess)
		return http.StatusOK, map[string]any{"user": u, "session": sessionView{sess.ExpiresAt}}, nil
	case "activate":
		u, err := a.ids.Activate(ctx, req.Token)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"activated": true, "user": u}, nil
	case "reset":
		if err := a.ids.RequestReset(ctx, req.Email); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"reset": "if the address has an account, a reset link was mailed to it"}, nil
	case "reset-confirm":
		u, err := a.ids.ConfirmReset(ctx, req.Token, req.Password)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"reset": true, "user": u}, nil
	case "":
		return 0, nil, apperr.InvalidField("action", "is required: register, login, activate, reset or reset-confirm")
	default:
		return 0, nil, apperr.InvalidField("action", "unknown action %q: use register, login, activate, reset or reset-confirm", req.Action)
	}
}

// status answers GET /auth/status; it never fails for a missing session.
func (a authRoutes) status(w http.ResponseWriter, r *http.Request) (int, any, error) {
	p, ok := identity.PrincipalFrom(r.Context())
	if !ok {
		return http.StatusOK, map[string]any{"authenticated": false}, nil
	}
	u, err := a.ids.GetUser(r.Context(), p.UserID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"authenticated": true, "via": p.Kind, "user": u}, nil
}

func (a authRoutes) profile(w http.ResponseWriter, r *http.Request) (int, any, error) {
	u, err := a.ids.GetUser(r.Context(), httpapi.TargetUser(r.Context()))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, u, nil
}

// logout revokes the session server-side and clears the cookie.
func (a authRoutes) logout(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if err := a.ids.EndSession(r.Context(), a.cookies.token(r)); err != nil {
		return 0, nil, err
	}
	a.cookies.clear(w)
	return http.StatusOK, map[string]any{"logged_out": true}, nil
}

// refresh rotates credentials. With a body {"refresh_token": ...} it is a
// device agent's token refresh (new pair under data.session; a reused
// token is 401 code 10003 "refresh_token_rotated"); without one it
// replaces the browser's session cookie with a new session.
func (a authRoutes) refresh(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		var req struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if req.RefreshToken == "" {
			httpapi.WriteError(w, r, apperr.InvalidField("refresh_token", "is required in a body; send no body to refresh a browser session"))
			return
		}
		tokens, err := a.devices.Refresh(r.Context(), req.RefreshToken)
		switch {
		case errors.Is(err, devicetoken.ErrRefreshRotated):
			httpapi.WriteRefreshRotated(w, r, err)
		case err != nil:
			httpapi.WriteError(w, r, err)
		default:
			httpapi.WriteData(w, http.StatusOK, map[string]any{"session": tokens})
		}
		return
	}
	sess, u, err := a.ids.RefreshSession(r.Context(), a.cookies.token(r))
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	a.cookies.set(w, sess)
	httpapi.WriteData(w, http.StatusOK, map[string]any{"user": u, "session": sessionView{sess.ExpiresAt}})
}
