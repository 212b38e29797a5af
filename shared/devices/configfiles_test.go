package devices_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
)

// A config file write is versioned and reaches the device as
// config.updated carrying the whole file, what changed and why; the
// application file takes only the settings a server may set.
func TestConfigFiles(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	dev := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	files := devices.NewConfigFiles(r.reg, r.sig)

	list, err := files.List(ctx, 1, dev.dev.ID)
	if err != nil || len(list) != 2 || list[0].File != "application" || list[1].File != "websocket" ||
		list[0].Version != 0 || string(list[0].Content) != "{}" {
		t.Fatalf("List of a new device = %+v, %v", list, err)
	}

	f, err := files.Put(ctx, 1, dev.dev.ID, "application", json.RawMessage(`{ "verbose": "debug" }`), "")
	if err != nil || f.Version != 1 || string(f.Content) != `{"verbose":"debug"}` {
		t.Fatalf("Put = %+v, %v", f, err)
	}
	sigs := r.sig.take()
	if len(sigs) != 1 || sigs[0].Type != devices.SignalConfigUpdated || sigs[0].DeviceID != dev.dev.ID {
		t.Fatalf("signals %+v", sigs)
	}
	ref, _ := json.Marshal(sigs[0].Ref)
	if want := `{"changed_paths":["verbose"],"reason":"user_update","replace":[{"content":{"verbose":"debug"},"file":"application"}]}`; string(ref) != want {
		t.Fatalf("ref %s\nwant %s", ref, want)
	}

	// The same content again keeps the version and signals again, with
	// nothing changed.
	if f, err := files.Put(ctx, 1, dev.dev.ID, "application", json.RawMessage(`{"verbose":"debug"}`), ""); err != nil || f.Version != 1 {
		t.Fatalf("same content = %+v, %v", f, err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || len(sigs[0].Ref["changed_paths"].([]string)) != 0 {
		t.Fatalf("signals of the same content %+v", sigs)
	}
	ws := `{"enabled":true,"remote_endpoint":"wss://certs.example/api/websocket","ping_interval_seconds":20}`
	if _, err := files.Put(ctx, 1, dev.dev.ID, "websocket", json.RawMessage(ws), "move to WebSocket"); err != nil {
		t.Fatal(err)
	}
	if _, err := files.Put(ctx, 1, dev.dev.ID, "websocket", json.RawMessage(strings.Replace(ws, "20", "30", 1)), ""); err != nil {
		t.Fatal(err)
	}
	sigs = r.sig.take()
	if len(sigs) != 2 || sigs[0].Ref["reason"] != "move to WebSocket" ||
		!slices.Equal(sigs[0].Ref["changed_paths"].([]string), []string{"enabled", "ping_interval_seconds", "remote_endpoint"}) ||
		!slices.Equal(sigs[1].Ref["changed_paths"].([]string), []string{"ping_interval_seconds"}) {
		t.Fatalf("websocket signals %+v", sigs)
	}
	if got, err := files.Get(ctx, 1, dev.dev.ID, "websocket"); err != nil || got.Version != 2 || !strings.Contains(string(got.Content), `"ping_interval_seconds":30`) {
		t.Fatalf("Get = %+v, %v", got, err)
	}

	for _, c := range []struct {
		file, content string
		code          apperr.Code
		field         string
	}{
		{"application", `{"auto_apply_config":true}`, apperr.Invalid, "content.auto_apply_config"},
		{"application", `{"verbose":3}`, apperr.Invalid, "content.verbose"},
		{"application", `[1,2]`, apperr.Invalid, "content"},
		{"application", `null`, apperr.Invalid, "content"},
		{"websocket", fmt.Sprintf(`{"x":%q}`, strings.Repeat("a", devices.MaxConfigFileBytes)), apperr.Invalid, "content"},
		{"secrets", `{}`, apperr.NotFound, ""},
	} {
		_, err := files.Put(ctx, 1, dev.dev.ID, c.file, json.RawMessage(c.content), "")
		if ae, ok := err.(*apperr.Error); !ok || ae.Code != c.code || ae.Field != c.field {
			t.Errorf("Put %s %.40s = %v; want %s %q", c.file, c.content, err, c.code, c.field)
		}
	}
	if sigs := r.sig.take(); len(sigs) != 0 {
		t.Fatalf("refused writes signalled %+v", sigs)
	}

	// Another user's device is not found; a deleted device's files go.
	if _, err := files.Put(ctx, 2, dev.dev.ID, "application", json.RawMessage(`{"verbose":"info"}`), ""); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("another user's device = %v", err)
	}
	if err := files.ForgetDevice(ctx, 1, dev.dev.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := files.Get(ctx, 1, dev.dev.ID, "application"); err != nil || got.Version != 0 {
		t.Fatalf("after ForgetDevice = %+v, %v", got, err)
	}
}
