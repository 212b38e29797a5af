package certctrl

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/passkey"
)

// webauthnRoutes serves /auth/webauthn/*: passkeys (seed 000).
type webauthnRoutes struct {
	pk      *passkey.Service
	ids     *identity.Service
	cookies Sessions
}

// WebAuthnRoutes are the passkey routes of the auth group. Registering,
// step-up and the credential list need a logged-in session (API keys are
// refused); the login routes are public and the login answer sets the
// session cookie as password login does.
//
//	POST   /auth/webauthn/register/options  → {"ceremony_id", "options"}
//	POST   /auth/webauthn/register/verify   {"ceremony_id", "credential"} → 201 the passkey
//	POST   /auth/webauthn/login/options     {"email"} or nothing (discoverable) → {"ceremony_id", "options"}
//	POST   /auth/webauthn/login/verify      {"ceremony_id", "credential"} → {"user", "session"} + cookie
//	POST   /auth/webauthn/step-up/options   → {"ceremony_id", "options"}
//	POST   /auth/webauthn/step-up/verify    {"ceremony_id", "credential"} → {"step_up": {"expires_at"}}
//	GET    /auth/webauthn/credentials       → the caller's passkeys
//	DELETE /auth/webauthn/credentials/{id}  → 204
func WebAuthnRoutes(pk *passkey.Service, ids *identity.Service, g *httpapi.Guard, cookies Sessions) []httpapi.Route {
	a := webauthnRoutes{pk: pk, ids: ids, cookies: cookies}
	session := httpapi.Scope{SessionOnly: true}
	return []httpapi.Route{
		{Method: "POST", Path: "/auth/webauthn/register/options", Handler: g.User(session, httpapi.Endpoint(a.registerOptions))},
		{Method: "POST", Path: "/auth/webauthn/register/verify", Handler: g.User(session, httpapi.Endpoint(a.registerVerify))},
		{Method: "POST", Path: "/auth/webauthn/login/options", Handler: g.Public(httpapi.Endpoint(a.loginOptions))},
		{Method: "POST", Path: "/auth/webauthn/login/verify", Handler: g.Public(httpapi.Endpoint(a.loginVerify))},
		{Method: "POST", Path: "/auth/webauthn/step-up/options", Handler: g.User(session, httpapi.Endpoint(a.stepUpOptions))},
		{Method: "POST", Path: "/auth/webauthn/step-up/verify", Handler: g.User(session, httpapi.Endpoint(a.stepUpVerify))},
		{Method: "GET", Path: "/auth/webauthn/credentials", Handler: g.User(session, httpapi.Endpoint(a.list))},
		{Method: "DELETE", Path: "/auth/webauthn/credentials/{id}", Handler: g.User(session, httpapi.Endpoint(a.delete))},
	}
}

// verifyRequest is the body of every .../verify route.
type verifyRequest struct {
	CeremonyID string `json:"ceremony_id"`
	// Credential is the browser's PublicKeyCredential, as JSON.
	Credential json.RawMessage `json:"credential"`
}

func decodeVerify(r *http.Request) (verifyRequest, error) {
	var req verifyRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return req, err
	}
	if req.CeremonyID == "" {
		return req, apperr.InvalidField("ceremony_id", "is required: the id the options route returned")
	}
	if len(bytes.TrimSpace(req.Credential)) == 0 || string(req.Credential) == "null" {
		return req, apperr.InvalidField("credential", "is required: the browser's PublicKeyCredential as JSON")
	}
	return req, nil
}

// decodeOptional decodes a JSON body into dst if there is one; an empty
// body leaves dst as it is.
func decodeOptional(r *http.Request, dst any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return apperr.New(apperr.TooLarge, "request body is larger than %d bytes", httpapi.MaxBodyBytes)
		}
		return apperr.New(apperr.BadJSON, "could not read the request body")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return httpapi.DecodeJSON(r, dst)
}

// caller is the session the guard let through.
func caller(r *http.Request) identity.Principal {
	p, _ := identity.PrincipalFrom(r.Context())
	return p
}

func (a webauthnRoutes) registerOptions(w http.ResponseWriter, r *http.Request) (int, any, error) {
	c, err := a.pk.BeginRegistration(r.Context(), caller(r).UserID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

func (a webauthnRoutes) registerVerify(w http.ResponseWriter, r *http.Request) (int, any, error) {
	req, err := decodeVerify(r)
	if err != nil {
		return 0, nil, err
	}
	cred, err := a.pk.FinishRegistration(r.Context(), caller(r).UserID, req.CeremonyID, req.Credential)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, cred, nil
}

func (a webauthnRoutes) loginOptions(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req struct {
		Email string `json:"email"`
	}
	if err := decodeOptional(r, &req); err != nil {
		return 0, nil, err
	}
	c, err := a.pk.BeginLogin(r.Context(), req.Email)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

func (a webauthnRoutes) loginVerify(w http.ResponseWriter, r *http.Request) (int, any, error) {
	req, err := decodeVerify(r)
	if err != nil {
		return 0, nil, err
	}
	u, err := a.pk.FinishLogin(r.Context(), req.CeremonyID, req.Credential)
	if err != nil {
		return 0, nil, err
	}
	sess, err := a.ids.StartSession(r.Context(), u)
	if err != nil {
		return 0, nil, err
	}
	a.cookies.set(w, sess)
	return http.StatusOK, map[string]any{"user": u, "session": sessionView{sess.ExpiresAt}}, nil
}

func (a webauthnRoutes) stepUpOptions(w http.ResponseWriter, r *http.Request) (int, any, error) {
	p := caller(r)
	c, err := a.pk.BeginStepUp(r.Context(), p.UserID, p.ID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

func (a webauthnRoutes) stepUpVerify(w http.ResponseWriter, r *http.Request) (int, any, error) {
	req, err := decodeVerify(r)
	if err != nil {
		return 0, nil, err
	}
	p := caller(r)
	until, err := a.pk.FinishStepUp(r.Context(), p.UserID, p.ID, req.CeremonyID, req.Credential)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"step_up": struct {
		ExpiresAt time.Time `json:"expires_at"`
	}{until}}, nil
}

func (a webauthnRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	creds, err := a.pk.ListCredentials(r.Context(), caller(r).UserID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, creds, nil
}

func (a webauthnRoutes) delete(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if err := a.pk.DeleteCredential(r.Context(), caller(r).UserID, r.PathValue("id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
