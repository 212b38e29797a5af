package certctrl

import (
	"encoding/base64"
	"net/http"
	"strconv"

	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// caView is a private CA in this dialect (times in Unix seconds), never
// its key.
type caView struct {
	ID                 int64  `json:"id"`
	UserID             int64  `json:"user_id"`
	Name               string `json:"name"`
	CommonName         string `json:"common_name"`
	Organization       string `json:"organization"`
	OrganizationalUnit string `json:"organizational_unit"`
	Country            string `json:"country"`
	State              string `json:"state"`
	Locality           string `json:"locality"`
	Algorithm          string `json:"algorithm"`
	KeySize            int    `json:"key_size"`
	ValidDays          int    `json:"valid_days"`
	Status             string `json:"status"`
	SerialNumber       string `json:"serial_number"`
	CACertificatePEM   string `json:"ca_certificate_pem"`
	NotBefore          int64  `json:"not_before"`
	NotAfter           int64  `json:"not_after"`
	CreatedAt          int64  `json:"created_at"`
	UpdatedAt          int64  `json:"updated_at"`
}

func viewCA(c cas.CA) caView {
	return caView{ID: c.ID, UserID: c.UserID, Name: c.Name, CommonName: c.CommonName, Organization: c.Organization,
		OrganizationalUnit: c.OrganizationalUnit, Country: c.Country, State: c.State, Locality: c.Locality,
		Algorithm: c.Algorithm, KeySize: c.KeySize, ValidDays: c.ValidDays, Status: c.Status, SerialNumber: c.SerialNumber,
		CACertificatePEM: c.CertificatePEM, NotBefore: c.NotBefore.Unix(), NotAfter: c.NotAfter.Unix(),
		CreatedAt: c.CreatedAt.Unix(), UpdatedAt: c.UpdatedAt.Unix()}
}

// caBundleView is a CA bundle as the agent reads it (protocol §4.1).
type caBundleView struct {
	ID                  int64  `json:"id"`
	Name                string `json:"name"`
	SerialNumber        string `json:"serial_number"`
	Status              string `json:"status"`
	Algorithm           string `json:"algorithm"`
	KeySize             int    `json:"key_size"`
	ValidDays           int    `json:"valid_days"`
	CACertificatePEM    string `json:"ca_certificate_pem"`
	CACertificateDERB64 string `json:"ca_certificate_der_b64"`
}

func viewCABundle(c cas.CA) caBundleView {
	return caBundleView{ID: c.ID, Name: c.Name, SerialNumber: c.SerialNumber, Status: c.Status, Algorithm: c.Algorithm,
		KeySize: c.KeySize, ValidDays: c.ValidDays, CACertificatePEM: c.CertificatePEM,
		CACertificateDERB64: base64.StdEncoding.EncodeToString(c.CertificateDER())}
}

const caParam = "ca_id"

type caRoutes struct{ svc *cas.Service }

// CAsGroup is the private CA route group (its Lambda function), under
// /apiv1/users/{user_id}/ and /apiv1/me/ (API-key scope cas):
//
//	GET    cas           the user's CAs (?offset, ?limit; X-Total-Count)
//	POST   cas           create a root CA {"name", "common_name"?, "organization"?, "organizational_unit"?,
//	                     "country"?, "state"?, "locality"?, "algorithm"?, "key_size"?, "valid_days"?} (201)
//	GET    cas/{ca_id}   one CA
//	PUT    cas/{ca_id}   {"name"?, "status"?: "ACTIVE"|"INACTIVE"}
//	DELETE cas/{ca_id}   take it off every device (ca.unassigned), then delete it (204)
func CAsGroup(svc *cas.Service, g *httpapi.Guard) httpapi.Group {
	c := caRoutes{svc: svc}
	scope := func(action, param string) httpapi.Scope {
		return httpapi.Scope{ObType: "cas", Action: action, ObIDParam: param}
	}
	one := "cas/{" + caParam + "}"
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix string
		scope          httpapi.Scope
		fn             httpapi.EndpointFunc
	}{
		{"GET", "cas", scope("read", ""), c.list},
		{"POST", "cas", scope("create", ""), c.create},
		{"GET", one, scope("read", caParam), c.get},
		{"PUT", one, scope("update", caParam), c.update},
		{"DELETE", one, scope("delete", caParam), c.delete},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, r.scope, httpapi.Endpoint(r.fn))...)
	}
	return httpapi.Group{Name: "cas", Routes: rs}
}

func caID(r *http.Request) (int64, error) { return httpapi.PathID(r, caParam) }

func (c caRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	offset, limit, err := offsetLimit(r)
	if err != nil {
		return 0, nil, err
	}
	list, total, err := c.svc.List(r.Context(), httpapi.TargetUser(r.Context()), readableIDs(r, "cas"), offset, limit)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	out := make([]caView, len(list))
	for i, ca := range list {
		out[i] = viewCA(ca)
	}
	return http.StatusOK, out, nil
}

// caRequest is the body of POST; key_algorithm is accepted for
// algorithm, as certificates call it.
type caRequest struct {
	Name               string `json:"name"`
	CommonName         string `json:"common_name"`
	Organization       string `json:"organization"`
	OrganizationalUnit string `json:"organizational_unit"`
	Country            string `json:"country"`
	State              string `json:"state"`
	Locality           string `json:"locality"`
	Algorithm          string `json:"algorithm"`
	KeyAlgorithm       string `json:"key_algorithm"`
	KeySize            int    `json:"key_size"`
	ValidDays          int    `json:"valid_days"`
}

func (c caRoutes) create(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req caRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Algorithm == "" {
		req.Algorithm = req.KeyAlgorithm
	}
	ca, err := c.svc.Create(r.Context(), httpapi.TargetUser(r.Context()), cas.NewCA{Name: req.Name, CommonName: req.CommonName,
		Organization: req.Organization, OrganizationalUnit: req.OrganizationalUnit, Country: req.Country, State: req.State,
		Locality: req.Locality, Algorithm: req.Algorithm, KeySize: req.KeySize, ValidDays: req.ValidDays})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, viewCA(ca), nil
}

func (c caRoutes) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := caID(r)
	if err != nil {
		return 0, nil, err
	}
	ca, err := c.svc.Get(r.Context(), httpapi.TargetUser(r.Context()), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewCA(ca), nil
}

func (c caRoutes) update(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := caID(r)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Name   *string `json:"name"`
		Status *string `json:"status"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ca, err := c.svc.Update(r.Context(), httpapi.TargetUser(r.Context()), id, cas.Changes{Name: req.Name, Status: req.Status})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewCA(ca), nil
}

func (c caRoutes) delete(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := caID(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, c.svc.Delete(r.Context(), httpapi.TargetUser(r.Context()), id)
}
