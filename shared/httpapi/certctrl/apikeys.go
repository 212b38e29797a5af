package certctrl

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// apiKeyRoutes serves /apiv1/users/:user_id/apikeys and /apiv1/me/apikeys.
// Keys are managed from a logged-in session only: a key cannot mint keys.
type apiKeyRoutes struct {
	ids   *identity.Service
	guard *httpapi.Guard
}

func (k apiKeyRoutes) routes() []httpapi.Route {
	session := httpapi.Scope{SessionOnly: true}
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix string
		fn             httpapi.EndpointFunc
	}{
		{"GET", "apikeys", k.list},
		{"POST", "apikeys", k.create},
		{"GET", "apikeys/{apikey_id}", k.get},
		{"PATCH", "apikeys/{apikey_id}", k.patch},
		{"DELETE", "apikeys/{apikey_id}", k.delete},
	} {
		rs = append(rs, userRoutes(k.guard, r.method, r.suffix, session, httpapi.Endpoint(r.fn))...)
	}
	return rs
}

func (k apiKeyRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	limit, cursor, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	keys, next, err := k.ids.ListAPIKeys(r.Context(), httpapi.TargetUser(r.Context()), limit, cursor)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, listPage(w, keys, next), nil
}

// createdKey is the one response that carries a key's token.
type createdKey struct {
	identity.APIKey
	Token string `json:"token"`
}

func (k apiKeyRoutes) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req identity.NewAPIKey
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	key, token, err := k.ids.CreateAPIKey(r.Context(), httpapi.TargetUser(r.Context()), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, createdKey{APIKey: key, Token: token}, nil
}

func (k apiKeyRoutes) get(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := k.ids.GetAPIKey(r.Context(), httpapi.TargetUser(r.Context()), r.PathValue("apikey_id"))
	return http.StatusOK, key, err
}

// patch replaces the key's permissions: {"permissions":[...]}.
func (k apiKeyRoutes) patch(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req struct {
		Permissions []identity.Permission `json:"permissions"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	key, err := k.ids.SetAPIKeyPermissions(r.Context(), httpapi.TargetUser(r.Context()), r.PathValue("apikey_id"), req.Permissions)
	return http.StatusOK, key, err
}

func (k apiKeyRoutes) delete(w http.ResponseWriter, r *http.Request) (int, any, error) {
	err := k.ids.DeleteAPIKey(r.Context(), httpapi.TargetUser(r.Context()), r.PathValue("apikey_id"))
	return http.StatusNoContent, nil, err
}
