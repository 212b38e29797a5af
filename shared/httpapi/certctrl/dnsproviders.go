package certctrl

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// dnsProviderView is a user's DNS provider in this dialect: the names of
// its settings, never their values.
type dnsProviderView struct {
	ID          int64     `json:"id"`
	UserID      int64     `json:"user_id"`
	Name        string    `json:"name"`
	Provider    string    `json:"provider"`
	SettingKeys []string  `json:"setting_keys"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func viewDNSProvider(p dnsprov.Provider) dnsProviderView {
	keys := p.SettingKeys
	if keys == nil {
		keys = []string{}
	}
	return dnsProviderView{ID: p.ID, UserID: p.UserID, Name: p.Name, Provider: p.Provider, SettingKeys: keys,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// dnsProviderRoutes serves /apiv1/users/:user_id/dns-providers and the
// /apiv1/me alias (API-key scope dns_providers), and the public catalog
// of the providers lego offers.
type dnsProviderRoutes struct {
	svc *dnsprov.Service
}

const dnsProviderParam = "dns_provider_id"

// DNSProviderRoutes are the DNS provider routes; they belong to the
// certificate route group (its Lambda function), beside the certificates
// that name the providers.
func DNSProviderRoutes(svc *dnsprov.Service, g *httpapi.Guard) []httpapi.Route {
	d := dnsProviderRoutes{svc: svc}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "dns_providers", Action: action, ObIDParam: dnsProviderParam}
	}
	one := "dns-providers/{" + dnsProviderParam + "}"
	rs := []httpapi.Route{{Method: "GET", Path: "/apiv1/dns/providers/catalog", Handler: g.Public(httpapi.Endpoint(
		func(http.ResponseWriter, *http.Request) (int, any, error) {
			return http.StatusOK, dnsprov.Catalog(), nil
		}))}}
	for _, r := range []struct {
		method, suffix, action string
		fn                     httpapi.EndpointFunc
	}{
		{"GET", "dns-providers", "read", d.list},
		{"POST", "dns-providers", "create", d.create},
		{"GET", one, "read", d.get},
		{"PUT", one, "update", d.update},
		{"DELETE", one, "delete", d.delete},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, scope(r.action), httpapi.Endpoint(r.fn))...)
	}
	return rs
}

func dnsProviderID(r *http.Request) (int64, error) { return httpapi.PathID(r, dnsProviderParam) }

// list answers ?offset= (default 0) and ?limit= (default 100); the total
// is in X-Total-Count. An API key lists the providers its read grants
// name.
func (d dnsProviderRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	offset, limit, err := offsetLimit(r)
	if err != nil {
		return 0, nil, err
	}
	list, total, err := d.svc.List(r.Context(), httpapi.TargetUser(r.Context()),
		dnsprov.Filter{Allow: readableIDs(r, "dns_providers")}, offset, limit)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	out := make([]dnsProviderView, len(list))
	for i, p := range list {
		out[i] = viewDNSProvider(p)
	}
	return http.StatusOK, out, nil
}

// dnsProviderRequest is the body of POST ({"name","provider","settings"})
// and PUT (name and/or settings; settings replace all).
type dnsProviderRequest struct {
	Name     *string           `json:"name"`
	Provider *string           `json:"provider"`
	Settings map[string]string `json:"settings"`
}

func (d dnsProviderRoutes) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req dnsProviderRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	user := httpapi.TargetUser(r.Context())
	p, err := d.svc.Create(r.Context(), user, dnsprov.NewProvider{Name: deref(req.Name), Provider: deref(req.Provider), Settings: req.Settings})
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/apiv1/users/%d/dns-providers/%d", user, p.ID))
	return http.StatusCreated, viewDNSProvider(p), nil
}

func (d dnsProviderRoutes) get(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := dnsProviderID(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := d.svc.Get(r.Context(), httpapi.TargetUser(r.Context()), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewDNSProvider(p), nil
}

func (d dnsProviderRoutes) update(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := dnsProviderID(r)
	if err != nil {
		return 0, nil, err
	}
	var req dnsProviderRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Provider != nil {
		return 0, nil, apperr.InvalidField("provider", "cannot change; create another DNS provider instead")
	}
	if req.Name == nil && req.Settings == nil {
		return 0, nil, apperr.New(apperr.Invalid, `nothing to change: give "name" and/or "settings" (which replace all settings)`)
	}
	p, err := d.svc.Update(r.Context(), httpapi.TargetUser(r.Context()), id, dnsprov.Changes{Name: req.Name, Settings: req.Settings})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewDNSProvider(p), nil
}

func (d dnsProviderRoutes) delete(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := dnsProviderID(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, d.svc.Delete(r.Context(), httpapi.TargetUser(r.Context()), id)
}
