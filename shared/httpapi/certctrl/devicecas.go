package certctrl

// Private CAs on devices (cert-ctrl device protocol §4.1): the user puts
// CAs on devices; a device reads the bundles of the CAs on it.

import (
	"net/http"
	"strconv"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// DeviceCADeps is what the device CA routes use.
type DeviceCADeps struct {
	CAs     *devices.CAAssociations
	Devices *devices.Service
	Guard   *httpapi.Guard
	// Verifier checks device access tokens (devicetoken.Service).
	Verifier httpapi.DeviceVerifier
}

type deviceCARoutes struct{ DeviceCADeps }

// DeviceCAUserRoutes are the user's routes (under /apiv1/users/{user_id}/
// and /apiv1/me/); an API key needs devices:update (or read) on the
// device, and cas:read on the CA it associates:
//
//	POST   devices/{device_id}/cas {"ca_id": N}      put the CA on the device (201 new, 200 again; ca.assigned)
//	GET    devices/{device_id}/cas                   the CAs on the device
//	GET    devices/{device_id}/cas/{ca_id}           one of them, with the CA
//	GET    devices/{device_id}/cas/{ca_id}/bundle    its bundle, as the device gets it
//	DELETE devices/{device_id}/cas/{ca_id}           take it off (204; ca.unassigned)
func DeviceCAUserRoutes(d DeviceCADeps) []httpapi.Route {
	rt := deviceCARoutes{d}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "devices", Action: action, ObIDParam: deviceParam}
	}
	one := "devices/{" + deviceParam + "}/cas/{" + caParam + "}"
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix, action string
		fn                     httpapi.EndpointFunc
	}{
		{"POST", "devices/{" + deviceParam + "}/cas", "update", rt.associate},
		{"GET", "devices/{" + deviceParam + "}/cas", "read", rt.list},
		{"GET", one, "read", rt.get},
		{"GET", one + "/bundle", "read", rt.bundle},
		{"DELETE", one, "update", rt.dissociate},
	} {
		rs = append(rs, userRoutes(d.Guard, r.method, r.suffix, scope(r.action), httpapi.Endpoint(r.fn))...)
	}
	return rs
}

// DeviceCASelfRoutes are the device's routes, behind its access token:
//
//	GET /apiv1/devices/self/cas/{ca_id}/bundle   the CA's bundle (§4.1): 404 when the CA is not on the device, 403 when inactive
func DeviceCASelfRoutes(d DeviceCADeps) []httpapi.Route {
	rt := deviceCARoutes{d}
	return []httpapi.Route{{Method: "GET", Path: "/apiv1/devices/self/cas/{" + caParam + "}/bundle",
		Handler: httpapi.DeviceAuth(d.Verifier, httpapi.Endpoint(rt.selfBundle))}}
}

// caAssociationView is a CA on a device (times in Unix seconds); the
// detail adds the CA.
type caAssociationView struct {
	DeviceID     int64   `json:"device_id"`
	CAID         int64   `json:"ca_id"`
	CAName       string  `json:"ca_name"`
	SerialNumber string  `json:"serial_number"`
	CreatedAt    int64   `json:"created_at"`
	CA           *caView `json:"ca,omitempty"`
}

func viewCAAssociation(a devices.CAAssociation) caAssociationView {
	return caAssociationView{DeviceID: a.DeviceID, CAID: a.CAID, CAName: a.CAName, SerialNumber: a.Serial, CreatedAt: a.CreatedAt.Unix()}
}

func (rt deviceCARoutes) associate(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		CAID int64 `json:"ca_id"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.CAID <= 0 {
		return 0, nil, apperr.InvalidField("ca_id", "is required: the id of one of your CAs")
	}
	if p, _ := identity.PrincipalFrom(r.Context()); !p.Allows("cas", strconv.FormatInt(req.CAID, 10), "read") {
		return 0, nil, apperr.New(apperr.Forbidden, "API key lacks permission cas:read on CA %d", req.CAID)
	}
	as, created, err := rt.CAs.Associate(r.Context(), httpapi.TargetUser(r.Context()), deviceID, req.CAID)
	if err != nil {
		return 0, nil, err
	}
	return createdStatus(created), viewCAAssociation(as), nil
}

func (rt deviceCARoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return listOnDevice(w, r, rt.Devices, rt.CAs.List, viewCAAssociation)
}

func (rt deviceCARoutes) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, id, err := onUserDevice(r, rt.Devices, caParam)
	if err != nil {
		return 0, nil, err
	}
	as, err := rt.CAs.Get(r.Context(), userID, deviceID, id)
	if err != nil {
		return 0, nil, err
	}
	v := viewCAAssociation(as)
	if ca, err := rt.CAs.CA(r.Context(), userID, id); err == nil {
		cv := viewCA(ca)
		v.CA = &cv
	} else if apperr.CodeOf(err) != apperr.NotFound {
		return 0, nil, err
	}
	return http.StatusOK, v, nil
}

func (rt deviceCARoutes) bundle(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, id, err := onUserDevice(r, rt.Devices, caParam)
	if err != nil {
		return 0, nil, err
	}
	ca, err := rt.CAs.Bundle(r.Context(), userID, deviceID, id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewCABundle(ca), nil
}

func (rt deviceCARoutes) dissociate(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, id, err := onUserDevice(r, rt.Devices, caParam)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, rt.CAs.Dissociate(r.Context(), userID, deviceID, id)
}

// selfBundle is the device's own read of a CA on it (§4.1); the agent
// adds ?pack=download, which changes nothing but the disposition.
func (rt deviceCARoutes) selfBundle(w http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, userID, ok := httpapi.DeviceFromContext(r.Context())
	if !ok {
		return 0, nil, apperr.New(apperr.Unauthorized, "a device access token is required")
	}
	id, err := caID(r)
	if err != nil {
		return 0, nil, err
	}
	ca, err := rt.CAs.Bundle(r.Context(), userID, deviceID, id)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Query().Get("pack") == "download" {
		w.Header().Set("Content-Disposition", `attachment; filename="ca-`+strconv.FormatInt(id, 10)+`.json"`)
	}
	return http.StatusOK, viewCABundle(ca), nil
}
