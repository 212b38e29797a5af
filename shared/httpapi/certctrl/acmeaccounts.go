package certctrl

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// acmeAccountView is an ACME account in this dialect's snake_case.
type acmeAccountView struct {
	ID           int64     `json:"id"`
	ProviderID   int64     `json:"provider_id"`
	ProviderName string    `json:"provider_name"`
	Email        string    `json:"email"`
	Status       string    `json:"status"`
	IsDefault    bool      `json:"is_default"`
	AccountURL   string    `json:"account_url"`
	EABKid       string    `json:"eab_kid,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func viewAccount(a acmeacct.Account) acmeAccountView {
	return acmeAccountView{ID: a.ID, ProviderID: a.ProviderID, ProviderName: a.ProviderName, Email: a.Email,
		Status: a.Status, IsDefault: a.IsDefault, AccountURL: a.AccountURL, EABKid: a.EABKid, LastError: a.LastError,
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

// acmeAccountRoutes serves /apiv1/users/:user_id/acme-accounts and the
// /apiv1/me alias (API-key scope acme_accounts), and the admin's custom
// CA providers.
type acmeAccountRoutes struct {
	svc   *acmeacct.Service
	guard *httpapi.Guard
}

const acmeAccountParam = "acme_account_id"

// AcmeAccountsGroup is the seed 000 ACME account route group (its own
// Lambda function).
func AcmeAccountsGroup(svc *acmeacct.Service, g *httpapi.Guard) httpapi.Group {
	a := acmeAccountRoutes{svc: svc, guard: g}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "acme_accounts", Action: action, ObIDParam: acmeAccountParam}
	}
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix, action string
		fn                     httpapi.EndpointFunc
	}{
		{"GET", "acme-accounts", "read", a.list},
		{"POST", "acme-accounts", "create", a.create},
		{"GET", "acme-accounts/{" + acmeAccountParam + "}", "read", a.get},
		{"PUT", "acme-accounts/{" + acmeAccountParam + "}", "update", a.update},
		{"DELETE", "acme-accounts/{" + acmeAccountParam + "}", "delete", a.delete},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, scope(r.action), httpapi.Endpoint(r.fn))...)
	}
	rs = append(rs,
		httpapi.Route{Method: "GET", Path: "/apiv1/admin/acme-providers", Handler: g.Admin(httpapi.Endpoint(a.providers))},
		httpapi.Route{Method: "POST", Path: "/apiv1/admin/acme-providers", Handler: g.Admin(httpapi.Endpoint(a.addProvider))},
	)
	return httpapi.Group{Name: "acmeaccounts", Routes: rs}
}

func accountID(r *http.Request) (int64, error) { return httpapi.PathID(r, acmeAccountParam) }

// list answers ?offset= (default 0) and ?limit= (default 100); the total
// is in X-Total-Count.
func (a acmeAccountRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	limit, _, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	offset := 0
	if raw := r.URL.Query().Get("offset"); raw != "" {
		if offset, err = strconv.Atoi(raw); err != nil || offset < 0 {
			return 0, nil, apperr.InvalidField("offset", "must be a whole number, 0 or more")
		}
	}
	accounts, total, err := a.svc.List(r.Context(), httpapi.TargetUser(r.Context()), acmeacct.Filter{}, offset, limit)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	out := make([]acmeAccountView, len(accounts))
	for i, acct := range accounts {
		out[i] = viewAccount(acct)
	}
	return http.StatusOK, out, nil
}

func (a acmeAccountRoutes) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req struct {
		ProviderName string `json:"provider_name"`
		Email        string `json:"email"`
		EABKid       string `json:"eab_kid"`
		EABHMACKey   string `json:"eab_hmac_key"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	acct, err := a.svc.Create(r.Context(), httpapi.TargetUser(r.Context()), acmeacct.NewAccount{
		ProviderName: req.ProviderName, Email: req.Email, EABKid: req.EABKid, EABHMACKey: req.EABHMACKey})
	if err != nil {
		return 0, nil, dialectFields(err)
	}
	return http.StatusCreated, viewAccount(acct), nil
}

func (a acmeAccountRoutes) get(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := accountID(r)
	if err != nil {
		return 0, nil, err
	}
	acct, err := a.svc.Get(r.Context(), httpapi.TargetUser(r.Context()), id)
	return http.StatusOK, viewAccount(acct), err
}

// update takes {"status": "active"|"disabled"} and/or {"is_default": true}.
func (a acmeAccountRoutes) update(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := accountID(r)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Status    *string `json:"status"`
		IsDefault *bool   `json:"is_default"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ctx, user := r.Context(), httpapi.TargetUser(r.Context())
	if req.Status == nil && req.IsDefault == nil {
		return 0, nil, apperr.InvalidField("status", `give "status" (active or disabled) and/or "is_default": true`)
	}
	if req.Status != nil {
		switch *req.Status {
		case acmeacct.StatusActive:
			_, err = a.svc.Enable(ctx, user, id)
		case acmeacct.StatusDisabled:
			_, err = a.svc.Disable(ctx, user, id)
		default:
			err = apperr.InvalidField("status", "must be active or disabled")
		}
		if err != nil {
			return 0, nil, err
		}
	}
	if req.IsDefault != nil {
		if !*req.IsDefault {
			return 0, nil, apperr.InvalidField("is_default", "make another account the default instead of unsetting this one")
		}
		acct, err := a.svc.Get(ctx, user, id)
		if err != nil {
			return 0, nil, err
		}
		if _, err := a.svc.SetDefault(ctx, user, acct.ProviderID, id); err != nil {
			return 0, nil, err
		}
	}
	acct, err := a.svc.Get(ctx, user, id)
	return http.StatusOK, viewAccount(acct), err
}

func (a acmeAccountRoutes) delete(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := accountID(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, a.svc.Delete(r.Context(), httpapi.TargetUser(r.Context()), id)
}

func (a acmeAccountRoutes) providers(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ps, err := a.svc.Providers(r.Context())
	return http.StatusOK, ps, err
}

func (a acmeAccountRoutes) addProvider(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req acmeacct.NewProvider
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	p, err := a.svc.AddProvider(r.Context(), req)
	return http.StatusCreated, p, err
}

// dialectFields renames the service's field names (seed 004's camelCase)
// to this dialect's snake_case.
func dialectFields(err error) error {
	ae, ok := err.(*apperr.Error)
	if !ok || ae.Field == "" {
		return err
	}
	names := map[string]string{"providerName": "provider_name", "eabKid": "eab_kid", "eabHmacKey": "eab_hmac_key"}
	if n, ok := names[ae.Field]; ok {
		c := *ae
		c.Field, c.Message = n, strings.Replace(c.Message, ae.Field+":", n+":", 1)
		return &c
	}
	return err
}
