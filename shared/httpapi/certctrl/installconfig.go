package certctrl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// installRoutes serves install configs (cert-ctrl device protocol
// §4.2-§4.4) to users, API-key automation and devices.
type installRoutes struct {
	configs *devices.InstallConfigs
	devices *devices.Service
}

// History page bounds of GET .../install-config-histories?limit=.
const installHistoryMax = devices.MaxInstallHistoryLimit

// InstallConfigRoutes are the user side of install configs, under
// /apiv1/users/{user_id}/devices/{device_id}/ and its /apiv1/me alias:
// GET and PUT install-config, POST install-config/restore {"version":N}
// and GET install-config-histories?limit= (API-key scope devices:read or
// devices:update); and the API-key automation
// POST /apiv1/me/install-config-update/{device_public_id} (scope
// ForInstallConfigUpdate:update or devices:update, for every device or
// that device's id or public id).
func InstallConfigRoutes(configs *devices.InstallConfigs, devs *devices.Service, g *httpapi.Guard) []httpapi.Route {
	rt := installRoutes{configs: configs, devices: devs}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "devices", Action: action, ObIDParam: deviceParam}
	}
	one := "devices/{" + deviceParam + "}/"
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix string
		scope          httpapi.Scope
		fn             httpapi.EndpointFunc
	}{
		{"GET", one + "install-config", scope("read"), rt.get},
		{"PUT", one + "install-config", scope("update"), rt.put},
		{"POST", one + "install-config/restore", scope("update"), rt.restore},
		{"GET", one + "install-config-histories", scope("read"), rt.history},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, r.scope, httpapi.Endpoint(r.fn))...)
	}
	return append(rs, httpapi.Route{Method: "POST", Path: "/apiv1/me/install-config-update/{device_public_id}",
		Handler: g.User(httpapi.Scope{}, httpapi.Endpoint(rt.automationUpdate))})
}

// DeviceSelfInstallRoutes are the device side, behind the device access
// token (httpapi.DeviceAuth): GET /apiv1/devices/self/install-config
// (always 200 for an existing device: version 0 with no installs when it
// has no config) and POST /apiv1/devices/self/notify (204; 400 for a
// missing or malformed events array).
func DeviceSelfInstallRoutes(configs *devices.InstallConfigs, v httpapi.DeviceVerifier) []httpapi.Route {
	rt := installRoutes{configs: configs}
	return []httpapi.Route{
		{Method: "GET", Path: "/apiv1/devices/self/install-config", Handler: httpapi.DeviceAuth(v, httpapi.Endpoint(rt.selfGet))},
		{Method: "POST", Path: "/apiv1/devices/self/notify", Handler: httpapi.DeviceAuth(v, httpapi.Endpoint(rt.selfNotify))},
	}
}

// installUpdatedBy names the caller in the config's updated_by: user:<id> for a
// session, apikey:<id> for an API key.
func installUpdatedBy(r *http.Request) string {
	p, ok := identity.PrincipalFrom(r.Context())
	switch {
	case !ok:
		return ""
	case p.Kind == identity.KindAPIKey:
		return "apikey:" + p.ID
	default:
		return "user:" + strconv.FormatInt(p.UserID, 10)
	}
}

func (rt installRoutes) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	c, err := rt.configs.GetInstallConfig(r.Context(), httpapi.TargetUser(r.Context()), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

// put replaces the config: {"installs":[...],"after_update_script":...}
// (installs_json, a string holding the installs array, is read when
// installs is absent).
func (rt installRoutes) put(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Installs          *[]devices.InstallItem `json:"installs"`
		InstallsJSON      *string                `json:"installs_json"`
		AfterUpdateScript *string                `json:"after_update_script"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Installs == nil && req.InstallsJSON != nil {
		var installs []devices.InstallItem
		if err := json.Unmarshal([]byte(*req.InstallsJSON), &installs); err != nil {
			return 0, nil, apperr.InvalidField("installs_json", "must be a JSON array of install items: %v", err)
		}
		req.Installs = &installs
	}
	if req.Installs == nil {
		return 0, nil, apperr.InvalidField("installs", "is required: an array of install items ([] for none)")
	}
	c, err := rt.configs.PutInstallConfig(r.Context(), httpapi.TargetUser(r.Context()), id, *req.Installs, req.AfterUpdateScript, installUpdatedBy(r))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

func (rt installRoutes) restore(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Version *int64 `json:"version"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Version == nil {
		return 0, nil, apperr.InvalidField("version", "is required: the version to restore")
	}
	ctx := devices.ContextWithUpdatedBy(r.Context(), installUpdatedBy(r))
	c, err := rt.configs.RestoreInstallConfig(ctx, httpapi.TargetUser(ctx), id, *req.Version)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, c, nil
}

func (rt installRoutes) history(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	limit := devices.DefaultInstallHistoryLimit
	if raw := r.URL.Query().Get("limit"); raw != "" {
		if limit, err = strconv.Atoi(raw); err != nil || limit < 1 || limit > installHistoryMax {
			return 0, nil, apperr.InvalidField("limit", "must be a whole number from 1 to %d", installHistoryMax)
		}
	}
	list, err := rt.configs.InstallConfigHistory(r.Context(), httpapi.TargetUser(r.Context()), id, limit)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, list, nil
}

// installAllowsUpdate reports whether the caller may patch the device's install
// config: ForInstallConfigUpdate:update or devices:update, granted for
// every object ("*"), the device's id or its public id. obid "" asks
// whether any such grant exists.
func installAllowsUpdate(p identity.Principal, obids ...string) bool {
	for _, t := range []string{"ForInstallConfigUpdate", "devices"} {
		for _, id := range obids {
			if p.Allows(t, id, "update") {
				return true
			}
		}
	}
	return false
}

// automationUpdate is POST /apiv1/me/install-config-update/{device_public_id}
// (protocol §4.4): the body is an array of patches, or {"patches":[...],
// "after_update_script":string|null} (null removes the script, absent
// keeps it). The data is the new config with a message the agent prints.
func (rt installRoutes) automationUpdate(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, _ := identity.PrincipalFrom(r.Context())
	if !installAllowsUpdate(p, "") {
		return 0, nil, apperr.New(apperr.Forbidden, "API key lacks permission ForInstallConfigUpdate:update or devices:update")
	}
	var body json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return 0, nil, err
	}
	var rawPatches []json.RawMessage
	var script *string
	switch trimmed := bytes.TrimSpace(body); {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(trimmed, &rawPatches); err != nil {
			return 0, nil, apperr.InvalidField("patches", "must be an array of patch objects")
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		var req struct {
			Patches           json.RawMessage `json:"patches"`
			AfterUpdateScript json.RawMessage `json:"after_update_script"`
		}
		if err := json.Unmarshal(trimmed, &req); err != nil {
			return 0, nil, apperr.New(apperr.BadJSON, "malformed JSON: %v", err)
		}
		if len(req.Patches) > 0 && string(req.Patches) != "null" {
			if err := json.Unmarshal(req.Patches, &rawPatches); err != nil {
				return 0, nil, apperr.InvalidField("patches", "must be an array of patch objects")
			}
		}
		switch s := bytes.TrimSpace(req.AfterUpdateScript); {
		case len(s) == 0:
		case string(s) == "null":
			script = new(string) // remove the script
		default:
			var v string
			if err := json.Unmarshal(s, &v); err != nil {
				return 0, nil, apperr.InvalidField("after_update_script", "must be a string or null")
			}
			script = &v
		}
	default:
		return 0, nil, apperr.New(apperr.BadJSON, `request body must be an array of patches or {"patches":[...],"after_update_script":...}`)
	}
	patches := make([]devices.InstallPatch, len(rawPatches))
	for i, raw := range rawPatches {
		if err := json.Unmarshal(raw, &patches[i]); err != nil {
			return 0, nil, apperr.InvalidField(fmt.Sprintf("patches[%d]", i), "%v", err)
		}
	}
	ctx := devices.ContextWithUpdatedBy(r.Context(), installUpdatedBy(r))
	userID := httpapi.TargetUser(ctx)
	d, err := rt.devices.ByPublicID(ctx, userID, r.PathValue("device_public_id"))
	if err != nil {
		return 0, nil, err
	}
	if !installAllowsUpdate(p, strconv.FormatInt(d.ID, 10), d.PublicID) {
		return 0, nil, apperr.New(apperr.Forbidden, "API key lacks permission ForInstallConfigUpdate:update for device %s", d.PublicID)
	}
	c, err := rt.configs.PatchInstallConfig(ctx, userID, d.ID, patches, script)
	if err != nil {
		return 0, nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return 0, nil, err
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(b, &data); err != nil {
		return 0, nil, err
	}
	data["message"], _ = json.Marshal(fmt.Sprintf("install config of device %s updated to version %d", d.PublicID, c.Version))
	return http.StatusOK, data, nil
}

// selfGet is the agent's install config fetch: always 200 for its device.
func (rt installRoutes) selfGet(w http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, userID, _ := httpapi.DeviceFromContext(r.Context())
	c, err := rt.configs.GetInstallConfig(r.Context(), userID, deviceID)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Cache-Control", "no-store")
	return http.StatusOK, c, nil
}

// selfNotify records the agent's notify (its version): 204.
func (rt installRoutes) selfNotify(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, userID, _ := httpapi.DeviceFromContext(r.Context())
	var body json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return 0, nil, err
	}
	_, events, err := devices.ParseNotify(body)
	if err != nil {
		return 0, nil, err
	}
	if err := rt.configs.RecordNotify(r.Context(), userID, deviceID, events); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
