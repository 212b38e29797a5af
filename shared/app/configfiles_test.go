package app_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/store"
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

// TestDeleteDeviceLeavesNothing: deleting a device over HTTP removes
// every item kept for it in the user's partition (its install config and
// history, agent version, config files, CA association), while another
// device's stay; the CA itself stays.
func TestDeleteDeviceLeavesNothing(t *testing.T) {
	a, userID, key := updatesApp(t)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx := t.Context()
	gone, _, _ := updatesDevice(t, srv.URL, key, 1)
	kept, _, _ := updatesDevice(t, srv.URL, key, 2)
	ca, err := a.CAs.Create(ctx, userID, cas.NewCA{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	script := "systemctl reload nginx"
	for _, dev := range []int64{gone, kept} {
		for range 2 {
			if _, err := a.InstallConfigs.PutInstallConfig(ctx, userID, dev, nil, &script, "test"); err != nil {
				t.Fatal(err)
			}
			script += " "
		}
		if err := a.InstallConfigs.RecordNotify(ctx, userID, dev, []devices.NotifyEvent{{Type: devices.NotifyAgentVersion, Agent: "cert-ctrl", Version: "1.4.2"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ConfigFiles().Put(ctx, userID, dev, devices.ConfigFileApplication, json.RawMessage(`{"verbose":"info"}`), ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.CAAssociations().Associate(ctx, userID, dev, ca.ID); err != nil {
			t.Fatal(err)
		}
	}
	itemsOf := func(dev int64) []string {
		page, err := a.Store.Query(ctx, store.Query{Table: devices.Table, PK: fmt.Sprintf("user#%d", userID), Limit: store.MaxQueryLimit})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, it := range page.Items {
			// The device's id is the first number of its items' keys, or
			// follows "dev#".
			id := fmt.Sprintf("%019d", dev)
			if regexp.MustCompile(`^[a-z]+#`+id).MatchString(it.SK) || strings.Contains(it.SK, "dev#"+id) {
				out = append(out, it.SK)
			}
		}
		return out
	}
	before := len(itemsOf(kept))
	if n := len(itemsOf(gone)); n < 7 {
		t.Fatalf("the device to delete has only %d items: %v", n, itemsOf(gone))
	}
	_, op, err := a.Identity.CreateAPIKey(ctx, userID, identity.NewAPIKey{Name: "operator",
		Permissions: []identity.Permission{{ObType: "devices", ObID: "*", Actions: []string{"delete"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := (deviceClient{t: t, base: srv.URL}).do("DELETE", fmt.Sprintf("/apiv1/users/%d/devices/%d", userID, gone), "bearer:"+op, nil); r.Status != 204 {
		t.Fatalf("delete: %d %+v", r.Status, r.Error)
	}
	if left := itemsOf(gone); len(left) != 0 {
		t.Fatalf("left after the delete: %v", left)
	}
	if n := len(itemsOf(kept)); n != before {
		t.Fatalf("the other device has %d items, had %d", n, before)
	}
	if _, err := a.CAs.Get(ctx, userID, ca.ID); err != nil {
		t.Fatalf("the CA: %v", err)
	}
}
