package app_test

import (
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/certfleet/certfleet/shared/identity"
)

// TestConfigUpdatedAndResyncReachTheDevice: the two signals that no
// other scenario emits reach the device over HTTP. A config file written
// at .../devices/{id}/config-files/{file} arrives as config.updated with
// the whole file; a device that registers again with another key (a new
// install) is asked for a full resync.
func TestConfigUpdatedAndResyncReachTheDevice(t *testing.T) {
	a, userID, key := updatesApp(t)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	c := deviceClient{t: t, base: srv.URL}
	dev, access, _ := updatesDevice(t, srv.URL, key, 7)
	ak := "bearer:" + key

	// The agent's API key may not write config files (devices:update).
	path := fmt.Sprintf("/apiv1/me/devices/%d/config-files/application", dev)
	if r := c.do("PUT", path, ak, map[string]any{"content": map[string]any{"verbose": "debug"}}); r.Status != 403 {
		t.Fatalf("config file with the agent's key: %d", r.Status)
	}
	_, op, err := a.Identity.CreateAPIKey(t.Context(), userID, identity.NewAPIKey{Name: "operator",
		Permissions: []identity.Permission{{ObType: "devices", ObID: "*", Actions: []string{"read", "update"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.do("PUT", path, "bearer:"+op, map[string]any{"content": map[string]any{"auto_apply_config": false}}); r.Status != 400 ||
		r.Error == nil || r.Error.Params["field"] != "content.auto_apply_config" {
		t.Fatalf("a local-only setting: %d %+v", r.Status, r.Error)
	}
	r := c.do("PUT", path, "bearer:"+op, map[string]any{"content": map[string]any{"verbose": "debug"}, "reason": "investigating"})
	if r.Status != 200 || r.str(t, "version") != "1" {
		t.Fatalf("write the application file: %d %+v %+v", r.Status, r.Data, r.Error)
	}
	if r := c.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/config-files", dev), "bearer:"+op, nil); r.Status != 200 || len(r.raw["data"]) < 20 {
		t.Fatalf("list config files: %d %s", r.Status, r.raw["data"])
	}
	p := updatesGet(t, srv.URL, "?limit=100", access, "")
	ref := caSignal(t, p, "config.updated")
	replace, _ := ref["replace"].([]any)
	first, _ := replace[0].(map[string]any)
	content, _ := first["content"].(map[string]any)
	if len(replace) != 1 || first["file"] != "application" || content["verbose"] != "debug" || ref["reason"] != "investigating" {
		t.Fatalf("config.updated ref %v", ref)
	}
	cursor := *p.Data.Cursor

	// The same device_public_id registers again with another key.
	pk := make([]byte, 32)
	pk[0] = 1
	if r := c.do("POST", "/apiv1/me/devices", ak, map[string]any{"device_public_id": fmt.Sprintf("00000000-0000-0000-0000-%012d", 7),
		"dev_pk": base64.StdEncoding.EncodeToString(pk), "name": "reinstalled"}); r.Status/100 != 2 {
		t.Fatalf("register again: %d %+v", r.Status, r.Error)
	}
	ref = caSignal(t, updatesGet(t, srv.URL, "?limit=100&cursor="+cursor, access, ""), "state.resync_required")
	if ref["action"] != "full_resync" || ref["reason"] != "device_key_changed" {
		t.Fatalf("state.resync_required ref %v", ref)
	}
}
