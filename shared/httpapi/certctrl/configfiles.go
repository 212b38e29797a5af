package certctrl

import (
	"encoding/json"
	"net/http"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// configFileView is a device's config file (time in Unix seconds).
type configFileView struct {
	DeviceID  int64           `json:"device_id"`
	File      string          `json:"file"`
	Version   int64           `json:"version"`
	Content   json.RawMessage `json:"content"`
	UpdatedAt int64           `json:"updated_at"`
}

func viewConfigFile(f devices.ConfigFile) configFileView {
	var at int64
	if !f.UpdatedAt.IsZero() {
		at = f.UpdatedAt.Unix()
	}
	return configFileView{DeviceID: f.DeviceID, File: f.File, Version: f.Version, Content: f.Content, UpdatedAt: at}
}

type configFileRoutes struct{ files *devices.ConfigFiles }

const configFileParam = "file"

// ConfigFileRoutes are a device's config files, for the devices group
// (under /apiv1/users/{user_id}/ and /apiv1/me/; scope devices):
//
//	GET devices/{device_id}/config-files          both files ("application", "websocket")
//	GET devices/{device_id}/config-files/{file}   one (version 0 and {} when never written)
//	PUT devices/{device_id}/config-files/{file}   {"content": {...}, "reason"?}: replace it and signal config.updated
func ConfigFileRoutes(files *devices.ConfigFiles, g *httpapi.Guard) []httpapi.Route {
	c := configFileRoutes{files: files}
	scope := func(action string) httpapi.Scope {
		return httpapi.Scope{ObType: "devices", Action: action, ObIDParam: deviceParam}
	}
	all := "devices/{" + deviceParam + "}/config-files"
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix, action string
		fn                     httpapi.EndpointFunc
	}{
		{"GET", all, "read", c.list},
		{"GET", all + "/{" + configFileParam + "}", "read", c.get},
		{"PUT", all + "/{" + configFileParam + "}", "update", c.put},
	} {
		rs = append(rs, userRoutes(g, r.method, r.suffix, scope(r.action), httpapi.Endpoint(r.fn))...)
	}
	return rs
}

func (c configFileRoutes) list(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	files, err := c.files.List(r.Context(), httpapi.TargetUser(r.Context()), deviceID)
	if err != nil {
		return 0, nil, err
	}
	out := make([]configFileView, len(files))
	for i, f := range files {
		out[i] = viewConfigFile(f)
	}
	return http.StatusOK, out, nil
}

func (c configFileRoutes) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	f, err := c.files.Get(r.Context(), httpapi.TargetUser(r.Context()), deviceID, r.PathValue(configFileParam))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewConfigFile(f), nil
}

func (c configFileRoutes) put(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Content json.RawMessage `json:"content"`
		Reason  string          `json:"reason"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if len(req.Content) == 0 {
		return 0, nil, apperr.InvalidField("content", "is required: the file's settings as a JSON object")
	}
	f, err := c.files.Put(r.Context(), httpapi.TargetUser(r.Context()), deviceID, r.PathValue(configFileParam), req.Content, req.Reason)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewConfigFile(f), nil
}
