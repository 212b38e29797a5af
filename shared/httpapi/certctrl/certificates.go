package certctrl

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// certificateView is a certificate record in this dialect. key_dist_policy
// repeats policy under the name the device protocol's reference record
// uses; renew_at and not_after are null until the first issue.
type certificateView struct {
	ID                  int64          `json:"id"`
	UserID              int64          `json:"user_id"`
	DomainName          string         `json:"domain_name"`
	SANs                []string       `json:"sans"`
	AcctID              int64          `json:"acct_id"`
	KeyAlgorithm        string         `json:"key_algorithm"`
	KeySize             int            `json:"key_size"`
	Policy              string         `json:"policy"`
	KeyDistPolicy       string         `json:"key_dist_policy"`
	ChallengeType       string         `json:"challenge_type"`
	Validation          validationView `json:"validation"`
	ServerDecryptExport bool           `json:"server_decrypt_export"`
	Status              string         `json:"status"`
	RenewAt             *time.Time     `json:"renew_at"`
	NotAfter            *time.Time     `json:"not_after"`
	CreatedAt           time.Time      `json:"created_at"`
	UpdatedAt           time.Time      `json:"updated_at"`
}

// validationView is how the names are proven, with the method's settings,
// never credentials: the DNS provider of dns-01-provider, and the CNAMEs
// the owner must add for dns-01-delegation.
type validationView struct {
	Method        string                  `json:"method"`
	DNSProviderID int64                   `json:"dns_provider_id,omitempty"`
	Delegation    []certs.DelegationCNAME `json:"delegation,omitempty"`
}

func (c certificateRoutes) view(cert certs.Certificate) certificateView {
	v := viewCertificate(cert)
	v.Validation.Delegation = c.svc.DelegationCNAMEs(cert)
	return v
}

func viewCertificate(c certs.Certificate) certificateView {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	sans := c.SANs
	if sans == nil {
		sans = []string{}
	}
	return certificateView{ID: c.ID, UserID: c.UserID, DomainName: c.DomainName, SANs: sans, AcctID: c.AcctID,
		KeyAlgorithm: c.KeyAlgorithm, KeySize: c.KeySize, Policy: c.Policy, KeyDistPolicy: c.Policy,
		ChallengeType: c.ChallengeType, Validation: validationView{Method: c.Validation.Method, DNSProviderID: c.Validation.DNSProviderID},
		ServerDecryptExport: c.ServerDecryptExport, Status: c.Status, RenewAt: opt(c.RenewAt), NotAfter: opt(c.NotAfter),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// certificateRoutes serves /apiv1/users/:user_id/certificates, the
// per-account listing under acme-accounts and the /apiv1/me aliases
// (API-key scope certificates).
type certificateRoutes struct {
	svc *certs.Service
}

const certificateParam = "certificate_id"

// CertificatesGroup is the seed 000 certificate route group (its own
// Lambda function): the certificate records. Issuing them is added by the
// issuance routes.
func CertificatesGroup(svc *certs.Service, g *httpapi.Guard) httpapi.Group {
	c := certificateRoutes{svc: svc}
	scope := func(action, param string) httpapi.Scope {
		return httpapi.Scope{ObType: "certificates", Action: action, ObIDParam: param}
	}
	one := "certificates/{" + certificateParam + "}"
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix string
		scope          httpapi.Scope
		fn             httpapi.EndpointFunc
	}{
		{"GET", "certificates", scope("read", ""), c.list},
		{"POST", "certificates", scope("create", ""), c.create},
		{"GET", one, scope("read", certificateParam), c.get},
		{"PUT", one, scope("update", certificateParam), c.update},
		{"DELETE", one, scope("delete", certificateParam), c.delete},
		{"GET", "acme-accounts/{" + acmeAccountParam + "}/certificates", scope("read", ""), c.listByAccount},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, r.scope, httpapi.Endpoint(r.fn))...)
	}
	return httpapi.Group{Name: "certificates", Routes: rs}
}

func certificateID(r *http.Request) (int64, error) { return httpapi.PathID(r, certificateParam) }

// offsetLimit reads ?offset= (default 0) and ?limit= (default 100).
func offsetLimit(r *http.Request) (offset, limit int, err error) {
	if limit, _, err = pageParams(r); err != nil {
		return 0, 0, err
	}
	if raw := r.URL.Query().Get("offset"); raw != "" {
		if offset, err = strconv.Atoi(raw); err != nil || offset < 0 {
			return 0, 0, apperr.InvalidField("offset", "must be a whole number, 0 or more")
		}
	}
	return offset, limit, nil
}

// readable is the filter of what the caller may list: everything for a
// session, the granted certificates for an API key without a "*" grant
// (the guard lets any certificates:read grant list).
func readable(r *http.Request) certs.Filter {
	return certs.Filter{Allow: readableIDs(r, "certificates")}
}

// readableIDs says which objects of obtype the caller may read: nil (all)
// for a session or an API key with a "*" read grant, else the ids its
// read grants name.
func readableIDs(r *http.Request, obtype string) func(id int64) bool {
	p, ok := identity.PrincipalFrom(r.Context())
	if !ok || p.Kind != identity.KindAPIKey {
		return nil
	}
	ids := map[int64]bool{}
	for _, perm := range p.Permissions {
		if perm.ObType != obtype || !slices.Contains(perm.Actions, "read") {
			continue
		}
		if perm.ObID == "*" {
			return nil
		}
		if id, err := strconv.ParseInt(perm.ObID, 10, 64); err == nil {
			ids[id] = true
		}
	}
	return func(id int64) bool { return ids[id] }
}

// listed writes the total in X-Total-Count and returns the views.
func (c certificateRoutes) listed(w http.ResponseWriter, list []certs.Certificate, total int) []certificateView {
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	out := make([]certificateView, len(list))
	for i, cert := range list {
		out[i] = c.view(cert)
	}
	return out
}

func (c certificateRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	offset, limit, err := offsetLimit(r)
	if err != nil {
		return 0, nil, err
	}
	list, total, err := c.svc.List(r.Context(), httpapi.TargetUser(r.Context()), readable(r), offset, limit)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c.listed(w, list, total), nil
}

func (c certificateRoutes) listByAccount(w http.ResponseWriter, r *http.Request) (int, any, error) {
	acct, err := accountID(r)
	if err != nil {
		return 0, nil, err
	}
	offset, limit, err := offsetLimit(r)
	if err != nil {
		return 0, nil, err
	}
	list, total, err := c.svc.ListByAccount(r.Context(), httpapi.TargetUser(r.Context()), acct, readable(r), offset, limit)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c.listed(w, list, total), nil
}

// certificateRequest is the body of POST and PUT. policy may also be
// given as key_dist_policy (the device protocol's name); the two must
// agree.
type certificateRequest struct {
	Action        *string   `json:"action"`
	DomainName    *string   `json:"domain_name"`
	SANs          *[]string `json:"sans"`
	AcctID        *int64    `json:"acct_id"`
	KeyAlgorithm  *string   `json:"key_algorithm"`
	KeySize       *int      `json:"key_size"`
	Policy        *string   `json:"policy"`
	KeyDistPolicy *string   `json:"key_dist_policy"`
	ChallengeType *string   `json:"challenge_type"`
	Validation    *struct {
		Method        *string `json:"method"`
		DNSProviderID *int64  `json:"dns_provider_id"`
	} `json:"validation"`
	ServerDecryptExport *bool `json:"server_decrypt_export"`
}

// changes turns the request into the service's changes.
func (req certificateRequest) changes() (certs.Changes, error) {
	ch := certs.Changes{DomainName: req.DomainName, SANs: req.SANs, AcctID: req.AcctID, KeyAlgorithm: req.KeyAlgorithm,
		KeySize: req.KeySize, Policy: req.Policy, ChallengeType: req.ChallengeType, ServerDecryptExport: req.ServerDecryptExport}
	if req.KeyDistPolicy != nil {
		if req.Policy != nil && *req.Policy != *req.KeyDistPolicy {
			return ch, apperr.InvalidField("key_dist_policy", "%q differs from policy %q; give one of them", *req.KeyDistPolicy, *req.Policy)
		}
		ch.Policy = req.KeyDistPolicy
	}
	if req.Validation != nil {
		if req.Validation.Method == nil && req.Validation.DNSProviderID == nil {
			return ch, apperr.InvalidField("validation.method", `is required in "validation" (or "dns_provider_id" alone, to change the DNS provider)`)
		}
		ch.ValidationMethod, ch.DNSProviderID = req.Validation.Method, req.Validation.DNSProviderID
	}
	return ch, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// create takes the seed's body: {"action":"create","domain_name":..,
// "sans":[..],"acct_id":..,"key_algorithm":..,"policy":..}, and
// "validation": {"method":..,"dns_provider_id":..}; "create" is the only
// action (an absent action means it).
func (c certificateRoutes) create(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req certificateRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if a := deref(req.Action); a != "" && a != "create" {
		return 0, nil, apperr.InvalidField("action", "unknown action %q; this route takes \"create\"", a)
	}
	ch, err := req.changes()
	if err != nil {
		return 0, nil, err
	}
	user := httpapi.TargetUser(r.Context())
	cert, err := c.svc.Create(r.Context(), user, certs.NewCertificate{
		DomainName: deref(ch.DomainName), SANs: deref(ch.SANs), AcctID: deref(ch.AcctID),
		KeyAlgorithm: deref(ch.KeyAlgorithm), KeySize: deref(ch.KeySize), Policy: deref(ch.Policy),
		ChallengeType: deref(ch.ChallengeType), ValidationMethod: deref(ch.ValidationMethod),
		DNSProviderID: deref(ch.DNSProviderID), ServerDecryptExport: deref(ch.ServerDecryptExport)})
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/apiv1/users/%d/certificates/%d", user, cert.ID))
	return http.StatusCreated, c.view(cert), nil
}

func (c certificateRoutes) get(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	cert, err := c.svc.Get(r.Context(), httpapi.TargetUser(r.Context()), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c.view(cert), nil
}

// update takes any of the create fields (action is ignored); names, key
// and validation change only before the first issue.
func (c certificateRoutes) update(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	var req certificateRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ch, err := req.changes()
	if err != nil {
		return 0, nil, err
	}
	if ch == (certs.Changes{}) {
		return 0, nil, apperr.New(apperr.Invalid, "nothing to change: give one or more of domain_name, sans, acct_id, "+
			"key_algorithm, key_size, policy, challenge_type, validation, server_decrypt_export")
	}
	cert, err := c.svc.Update(r.Context(), httpapi.TargetUser(r.Context()), id, ch)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c.view(cert), nil
}

func (c certificateRoutes) delete(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := certificateID(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, c.svc.Delete(r.Context(), httpapi.TargetUser(r.Context()), id)
}
