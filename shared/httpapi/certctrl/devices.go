package certctrl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
)

// DeviceDeps is what the device routes use.
type DeviceDeps struct {
	Devices *devices.Service
	Grant   *devices.Grant
	Tokens  *devicetoken.Service
	Guard   *httpapi.Guard
}

type deviceRoutes struct{ DeviceDeps }

const deviceParam = "device_id"

// DevicesGroup is the device onboarding and management route group (its
// own Lambda): the device authorization grant (POST /auth/device), the
// agent's registration (POST /apiv1/device/registration), API-key
// registration and the user's device list, get, by-public-id and delete
// under /apiv1/users/{user_id}/devices and /apiv1/me/devices (API-key
// scope devices; registering also accepts ForDeviceAuthenticate).
func DevicesGroup(d DeviceDeps) httpapi.Group {
	rt := deviceRoutes{d}
	g := d.Guard
	scope := func(action, param string) httpapi.Scope {
		return httpapi.Scope{ObType: "devices", Action: action, ObIDParam: param}
	}
	rs := []httpapi.Route{
		{Method: "POST", Path: "/auth/device", Handler: g.Public(httpapi.Endpoint(rt.grant))},
		{Method: "POST", Path: "/apiv1/device/registration", Handler: g.Public(httpapi.Endpoint(rt.registerWithCode))},
	}
	one := "devices/{" + deviceParam + "}"
	for _, r := range []struct {
		method, suffix string
		scope          httpapi.Scope
		fn             httpapi.EndpointFunc
	}{
		{"GET", "devices", scope("read", ""), rt.list},
		{"POST", "devices", httpapi.Scope{}, rt.registerWithKey},
		{"GET", one, scope("read", deviceParam), rt.get},
		{"DELETE", one, scope("delete", deviceParam), rt.delete},
		{"GET", "devices/by-public-id/{device_public_id}", scope("read", ""), rt.byPublicID},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, r.scope, httpapi.Endpoint(r.fn))...)
	}
	return httpapi.Group{Name: "devices", Routes: rs}
}

// deviceView is a device in this dialect (protocol §1.2): the key as
// base64 and its fingerprint, times in Unix seconds.
type deviceView struct {
	ID         int64  `json:"id"`
	PublicID   string `json:"device_public_id"`
	UserID     int64  `json:"user_id"`
	Status     string `json:"status"`
	Name       string `json:"name"`
	Platform   string `json:"platform"`
	Model      string `json:"model"`
	AppVersion string `json:"app_version"`
	IP         string `json:"ip"`
	UserAgent  string `json:"user_agent"`
	DevPK      []byte `json:"dev_pk"`
	KeyFP      []byte `json:"device_keyfp_b64"`
	CreatedAt  int64  `json:"created_at"`
	UpdatedAt  int64  `json:"updated_at"`
}

func viewDevice(d devices.Device) deviceView {
	return deviceView{ID: d.ID, PublicID: d.PublicID, UserID: d.UserID, Status: d.Status, Name: d.Name, Platform: d.Platform,
		Model: d.Model, AppVersion: d.AppVersion, IP: d.IP, UserAgent: d.UserAgent, DevPK: d.PublicKey, KeyFP: d.KeyFP,
		CreatedAt: d.CreatedAt.Unix(), UpdatedAt: d.UpdatedAt.Unix()}
}

// grant serves the three actions of POST /auth/device. device_verify
// needs a signed-in browser session (cookie).
func (rt deviceRoutes) grant(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req struct {
		Action     string `json:"action"`
		ExpiresIn  int    `json:"expires_in"`
		Interval   int    `json:"interval"`
		UserCode   string `json:"user_code"`
		Approve    *bool  `json:"approve"`
		DeviceCode string `json:"device_code"`
		// Scopes is what the agent asks for (openid, profile, email); the
		// grant only ever leads to a device registration.
		Scopes []string `json:"scopes"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	switch req.Action {
	case "device_start":
		a, err := rt.Grant.Start(ctx, req.ExpiresIn, req.Interval)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"device_code": a.DeviceCode, "user_code": a.UserCode,
			"verification_uri": a.VerificationURI, "verification_uri_complete": a.VerificationURIComplete,
			"interval": a.Interval, "expires_in": a.ExpiresIn}, nil
	case "device_verify":
		p, ok := identity.PrincipalFrom(ctx)
		if !ok || p.Kind != identity.KindSession {
			return 0, nil, apperr.New(apperr.Unauthorized, "log in to approve a device")
		}
		if req.Approve == nil {
			return 0, nil, apperr.InvalidField("approve", "is required: true to approve the device, false to deny it")
		}
		status, err := rt.Grant.Verify(ctx, p.UserID, req.UserCode, *req.Approve)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"status": status}, nil
	case "device_poll":
		res, err := rt.Grant.Poll(ctx, req.DeviceCode)
		if err != nil {
			return 0, nil, err
		}
		out := map[string]any{"status": res.Status}
		if res.Status == "ready" {
			out["user_id"], out["registration_code"], out["registration_code_ttl"] = res.UserID, res.RegistrationCode, res.RegistrationTTL
		}
		return http.StatusOK, out, nil
	case "":
		return 0, nil, apperr.InvalidField("action", "is required: device_start, device_verify or device_poll")
	}
	return 0, nil, apperr.InvalidField("action", "unknown action %q: device_start, device_verify or device_poll", req.Action)
}

// registrationRequest is the agent's registration body (protocol §1.2).
type registrationRequest struct {
	UserID           json.Number `json:"user_id"`
	RegistrationCode string      `json:"registration_code"`
	RefreshToken     string      `json:"refresh_token"`
	PublicID         string      `json:"device_public_id"`
	DevPK            string      `json:"dev_pk"`
	Platform         string      `json:"platform"`
	Model            string      `json:"model"`
	AppVersion       string      `json:"app_version"`
	Name             string      `json:"name"`
	IP               string      `json:"ip"`
	UserAgent        string      `json:"user_agent"`
}

func (req registrationRequest) registration() devices.Registration {
	return devices.Registration{PublicID: req.PublicID, PublicKeyB64: req.DevPK, Name: req.Name, Platform: req.Platform,
		Model: req.Model, AppVersion: req.AppVersion, IP: req.IP, UserAgent: req.UserAgent}
}

// registered is the registration response: the device and its session.
func registered(d devices.Device, t devicetoken.Tokens) map[string]any {
	return map[string]any{"device": viewDevice(d), "session": t}
}

// registerWithCode registers the agent's device with the registration
// code of an approved grant, or, in a short retry window, with the
// refresh token of that device's previous registration; a new session
// either way.
func (rt deviceRoutes) registerWithCode(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req registrationRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	var userID int64
	switch {
	case req.RegistrationCode != "":
		uid, err := rt.Grant.ConsumeRegistrationCode(ctx, req.RegistrationCode)
		if err != nil {
			return 0, nil, err
		}
		if claimed, err := req.UserID.Int64(); req.UserID != "" && (err != nil || claimed != uid) {
			return 0, nil, apperr.InvalidField("user_id", "is not the user who approved this device")
		}
		userID = uid
	case req.RefreshToken != "":
		// A retry of a registration whose answer was lost: the refresh
		// token proves the device; it must be the same device_public_id.
		t, err := rt.Tokens.Refresh(ctx, req.RefreshToken)
		if err != nil {
			return 0, nil, err
		}
		deviceID, uid, err := rt.Tokens.VerifyDevice(ctx, t.AccessToken)
		if err != nil {
			return 0, nil, err
		}
		d, err := rt.Devices.Get(ctx, uid, deviceID)
		if err != nil || !sameDevice(d.PublicID, req.PublicID) {
			return 0, nil, apperr.InvalidField("device_public_id", "is not the device this refresh token belongs to")
		}
		if d, _, err = rt.Devices.Register(ctx, uid, req.registration()); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, registered(d, t), nil
	default:
		return 0, nil, apperr.InvalidField("registration_code", "is required: the code of an approved device authorization")
	}
	return rt.register(r, userID, req)
}

// sameDevice compares device_public_ids (hex, case-insensitive).
func sameDevice(a, b string) bool { return a != "" && strings.EqualFold(a, b) }

// register upserts the device and opens a session for it.
func (rt deviceRoutes) register(r *http.Request, userID int64, req registrationRequest) (int, any, error) {
	d, created, err := rt.Devices.Register(r.Context(), userID, req.registration())
	if err != nil {
		return 0, nil, err
	}
	t, err := rt.Tokens.Issue(r.Context(), d.ID, userID)
	if err != nil {
		return 0, nil, err
	}
	return createdStatus(created), registered(d, t), nil
}

// registerWithKey is the agent's `login --apikey` (and scripts'):
// POST .../devices with an API key holding devices:create or
// ForDeviceAuthenticate:authenticate, or a session.
func (rt deviceRoutes) registerWithKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, _ := identity.PrincipalFrom(r.Context())
	if !p.Allows("devices", "", "create") && !p.Allows("ForDeviceAuthenticate", "", "authenticate") {
		return 0, nil, apperr.New(apperr.Forbidden, "API key lacks permission devices:create or ForDeviceAuthenticate:authenticate")
	}
	var req registrationRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	return rt.register(r, httpapi.TargetUser(r.Context()), req)
}

func (rt deviceRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	offset, limit, err := offsetLimit(r)
	if err != nil {
		return 0, nil, err
	}
	list, total, err := rt.Devices.List(r.Context(), httpapi.TargetUser(r.Context()), offset, limit)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("X-Total-Count", fmt.Sprint(total))
	out := make([]deviceView, len(list))
	for i, d := range list {
		out[i] = viewDevice(d)
	}
	return http.StatusOK, out, nil
}

func (rt deviceRoutes) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	d, err := rt.Devices.Get(r.Context(), httpapi.TargetUser(r.Context()), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewDevice(d), nil
}

func (rt deviceRoutes) byPublicID(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	d, err := rt.Devices.ByPublicID(r.Context(), httpapi.TargetUser(r.Context()), r.PathValue("device_public_id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewDevice(d), nil
}

// delete removes the device and revokes its refresh tokens.
func (rt deviceRoutes) delete(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, rt.Devices.Delete(r.Context(), httpapi.TargetUser(r.Context()), id)
}

// deviceGet matches the GET routes one segment under a device:
// ".../devices/{device_id}/<name>" and
// ".../devices/by-public-id/{device_public_id}".
var deviceGet = regexp.MustCompile(`^(.*/devices/)(?:\{device_id\}/([a-z-]+)|(by-public-id)/\{device_public_id\})$`)

// MergeDeviceGets joins the GET routes one segment under a device into one
// route per path prefix, ".../devices/{device_id}/{device_sub}", which
// dispatches by segment: net/http's mux refuses "devices/by-public-id/{x}"
// beside "devices/{device_id}/install-config" (neither is more specific).
// by-public-id goes to its route with {device_public_id} set, a named
// segment to its route, anything else is 404.
func MergeDeviceGets(rs []httpapi.Route) []httpapi.Route {
	type byPrefix struct {
		byPublicID http.Handler
		named      map[string]http.Handler
	}
	var out []httpapi.Route
	var prefixes []string
	merged := map[string]*byPrefix{}
	for _, r := range rs {
		m := deviceGet.FindStringSubmatch(r.Path)
		if r.Method != http.MethodGet || m == nil {
			out = append(out, r)
			continue
		}
		e, ok := merged[m[1]]
		if !ok {
			e = &byPrefix{named: map[string]http.Handler{}}
			merged[m[1]] = e
			prefixes = append(prefixes, m[1])
		}
		if m[3] != "" {
			e.byPublicID = r.Handler
		} else {
			e.named[m[2]] = r.Handler
		}
	}
	for _, prefix := range prefixes {
		e := merged[prefix]
		out = append(out, httpapi.Route{Method: http.MethodGet, Path: prefix + "{" + deviceParam + "}/{device_sub}",
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sub := r.PathValue("device_sub")
				switch h, named := e.named[sub]; {
				case r.PathValue(deviceParam) == "by-public-id" && e.byPublicID != nil:
					r.SetPathValue("device_public_id", sub)
					e.byPublicID.ServeHTTP(w, r)
				case named:
					h.ServeHTTP(w, r)
				default:
					httpapi.WriteError(w, r, apperr.New(apperr.NotFound, "no such route: %s", r.URL.Path))
				}
			})})
	}
	return out
}
