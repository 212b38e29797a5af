package app_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// installSignals records install.updated signals.
type installSignals struct {
	mu   sync.Mutex
	refs []map[string]any
}

func (s *installSignals) Signal(_ context.Context, _, _ int64, typ string, ref map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if typ == devices.SignalInstallUpdated {
		s.refs = append(s.refs, ref)
	}
	return nil
}

// TestInstallConfigWiring serves the install config group of a local app
// over HTTP: a user's PUT reaches the agent's GET with the device's real
// access token, one install.updated follows, and the agent's notify is
// recorded.
func TestInstallConfigWiring(t *testing.T) {
	ctx := context.Background()
	a, err := app.Local(ctx, localConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	sig := &installSignals{}
	ic := a.NewInstallConfigs(sig)
	srv := httptest.NewServer(httpapi.Wrap(httpapi.NewRouter(a.InstallConfigGroup(ic)), a.Log))
	defer srv.Close()
	c := deviceClient{t: t, base: srv.URL}

	u, err := a.Identity.Register(ctx, identity.Registration{Email: "install@example.com", Password: "Install1Owner", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := a.Identity.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := a.Devices.Register(ctx, u.ID, devices.Registration{PublicID: "3d96fbe3-2f11-4061-bfae-27e0e6c5d023",
		PublicKeyB64: base64.StdEncoding.EncodeToString(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.DeviceTokens.Issue(ctx, d.ID, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	device := "bearer:" + tok.AccessToken

	if r := c.do("GET", "/apiv1/devices/self/install-config", device, nil); r.Status != 200 || r.str(t, "version") != "0" {
		t.Fatalf("empty config: %d %+v", r.Status, r.Data)
	}
	put := map[string]any{"installs": []map[string]any{{"id": "c", "type": "copy", "ob_type": "cert", "ob_id": 7,
		"from": []string{"fullchain.pem"}, "to": []string{"/etc/ssl/full.pem"}}}}
	r := c.do("PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", u.ID, d.ID), "cookie:"+sess.Token, put)
	if r.Status != 200 || r.str(t, "version") != "1" {
		t.Fatalf("PUT: %d %+v %+v", r.Status, r.Data, r.Error)
	}
	self := c.do("GET", "/apiv1/devices/self/install-config", device, nil)
	if self.Status != 200 || self.str(t, "version") != "1" || self.str(t, "user_device_id") != fmt.Sprint(d.ID) {
		t.Fatalf("self after PUT: %d %+v", self.Status, self.Data)
	}
	if len(sig.refs) != 1 || sig.refs[0]["version"] != int64(1) || sig.refs[0]["installs_hash_b64"] != self.str(t, "installs_hash") {
		t.Fatalf("signals %+v", sig.refs)
	}
	notify := map[string]any{"schema": "certctrl.device.notify.v1", "events": []map[string]any{{"type": "agent_version", "agent": "cert-ctrl", "version": "1.4.2"}}}
	if r := c.do("POST", "/apiv1/devices/self/notify", device, notify); r.Status != 204 {
		t.Fatalf("notify: %d %+v", r.Status, r.Error)
	}
	if info, ok, err := ic.AgentVersion(ctx, u.ID, d.ID); err != nil || !ok || info.Version != "1.4.2" {
		t.Fatalf("agent version %+v %v %v", info, ok, err)
	}
	if r := c.do("POST", "/apiv1/devices/self/notify", device, map[string]any{"events": "x"}); r.Status != 400 {
		t.Fatalf("malformed notify: %d", r.Status)
	}
}
