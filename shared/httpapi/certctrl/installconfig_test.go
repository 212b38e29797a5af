package certctrl_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// installSignal is one install.updated as the stream got it, with what
// the agent's GET returned at that moment.
type installSignal struct {
	userID, deviceID int64
	typ              string
	ref              map[string]any
	got              string // GET /apiv1/devices/self/install-config's data
}

// installStream records signals; at each one it fetches the device's
// config over HTTP as the agent would on receiving it.
type installStream struct {
	mu    sync.Mutex
	sigs  []installSignal
	fetch func(deviceID int64) string
}

func (s *installStream) Signal(_ context.Context, userID, deviceID int64, typ string, ref map[string]any) error {
	got := s.fetch(deviceID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sigs = append(s.sigs, installSignal{userID, deviceID, typ, ref, got})
	return nil
}

func (s *installStream) all() []installSignal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sigs)
}

type installEnv struct {
	testenv.Client
	t       *testing.T
	ids     *identity.Service
	devs    *devices.Service
	configs *devices.InstallConfigs
	tokens  *devicetoken.Service
	stream  *installStream
	access  map[int64]string // device id → access token
}

func newInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	p := testenv.New(t)
	ids := p.Identity()
	tokens := devicetoken.New(p.Store, p.Sealer, devicetoken.Config{})
	devs := devices.New(p.Store, tokens, devices.Config{})
	stream := &installStream{}
	configs := devices.NewInstallConfigs(p.Store, devs, stream, devices.InstallConfigsConfig{Now: p.Clock.Now, Log: p.Log})
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", 10000, time.Minute, nil), CookieName: "cjj365"}
	routes := append(certctrl.InstallConfigRoutes(configs, devs, guard), certctrl.DeviceSelfInstallRoutes(configs, tokens)...)
	h := httpapi.Wrap(httpapi.NewRouter(httpapi.Group{Name: "install-config", Routes: routes}), p.Log)
	e := &installEnv{Client: testenv.Client{T: t, Handler: h}, t: t, ids: ids, devs: devs, configs: configs, tokens: tokens,
		stream: stream, access: map[int64]string{}}
	stream.fetch = func(deviceID int64) string {
		r := e.device("GET", "/apiv1/devices/self/install-config", "", deviceID)
		return string(r.Data)
	}
	return e
}

// user registers an active user and returns a session and the user's id.
func (e *installEnv) user(email string) (string, int64) {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.ids.Register(ctx, identity.Registration{Email: email, Password: "Install1Config", Active: true})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := e.ids.StartSession(ctx, u)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Token, u.ID
}

// register adds a device of the user and issues its access token.
func (e *installEnv) register(userID int64, publicID string) devices.Device {
	e.t.Helper()
	ctx := context.Background()
	pk := make([]byte, 32)
	rand.Read(pk)
	d, _, err := e.devs.Register(ctx, userID, devices.Registration{PublicID: publicID, PublicKeyB64: base64.StdEncoding.EncodeToString(pk)})
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.tokens.Issue(ctx, d.ID, userID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.access[d.ID] = tok.AccessToken
	return d
}

func (e *installEnv) apiKey(userID int64, perms ...identity.Permission) string {
	e.t.Helper()
	_, key, err := e.ids.CreateAPIKey(context.Background(), userID, identity.NewAPIKey{Name: "automation", Permissions: perms})
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

// device sends a request as the device's agent (Bearer access token);
// deviceID 0 sends none.
func (e *installEnv) device(method, path, body string, deviceID int64) testenv.Reply {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "198.51.100.9:4444"
	req.Header.Set("Content-Type", "application/json")
	if deviceID != 0 {
		req.Header.Set("Authorization", "Bearer "+e.access[deviceID])
	}
	rec := httptest.NewRecorder()
	e.Handler.ServeHTTP(rec, req)
	r := testenv.Reply{Status: rec.Code, Header: rec.Header(), Body: rec.Body.String()}
	var env struct {
		Data  json.RawMessage
		Error *httpapi.ErrorBody
	}
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			e.t.Fatalf("%s %s: not JSON: %s", method, path, rec.Body)
		}
	}
	r.Data, r.Error = env.Data, env.Error
	return r
}

func installWant(t *testing.T, r testenv.Reply, status int, field string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if field != "" && (r.Error == nil || r.Error.Params["field"] != field) {
		t.Fatalf("error %s does not name field %q", r.Body, field)
	}
	if status >= 400 && (r.Error == nil || strings.Contains(r.Body, `"data"`)) {
		t.Fatalf("failure without the error envelope: %s", r.Body)
	}
}

// installDTO is the install config as the agent parses it; numbers that
// must be JSON integers are decoded as int64 (a string or a fraction
// fails the test).
type installDTO struct {
	ID                int64             `json:"id"`
	UserDeviceID      int64             `json:"user_device_id"`
	Version           int64             `json:"version"`
	Installs          []json.RawMessage `json:"installs"`
	InstallsHash      string            `json:"installs_hash"`
	AfterUpdateScript *string           `json:"after_update_script"`
	UpdatedBy         string            `json:"updated_by"`
	CreatedAt         int64             `json:"created_at"`
	UpdatedAt         int64             `json:"updated_at"`
}

func installDecode(t *testing.T, r testenv.Reply) installDTO {
	t.Helper()
	var c installDTO
	if err := json.Unmarshal(r.Data, &c); err != nil {
		t.Fatalf("install config %s: %v", r.Data, err)
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(r.Data, &raw)
	for _, k := range []string{"id", "user_device_id", "version", "installs", "installs_hash", "after_update_script", "created_at", "updated_at"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("install config %s has no %q", r.Data, k)
		}
	}
	return c
}

const (
	installPublicA  = "3d96fbe3-2f11-4061-bfae-27e0e6c5d023"
	installPublicA2 = "00000000-0000-0000-0000-0000000000a2"
	installPublicB  = "00000000-0000-0000-0000-0000000000b1"
)

// TestInstallConfigScenario12 is the protocol's scenario 12: PUT, restore
// and the API-key patch each bump the version, GET self install-config
// reflects the change before the one install.updated that carries
// config_id, version and installs_hash_b64.
func TestInstallConfigScenario12(t *testing.T) {
	e := newInstallEnv(t)
	session, uid := e.user("owner@example.com")
	d := e.register(uid, installPublicA)
	base := fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", uid, d.ID)
	me := fmt.Sprintf("/apiv1/me/devices/%d/install-config", d.ID)

	// A new device: 200, version 0, no installs, on both sides.
	r := e.device("GET", "/apiv1/devices/self/install-config", "", d.ID)
	installWant(t, r, 200, "")
	empty := installDecode(t, r)
	if empty.ID != 0 || empty.Version != 0 || empty.Installs == nil || len(empty.Installs) != 0 || empty.UserDeviceID != d.ID ||
		r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("empty config %s", r.Body)
	}
	if r := e.Do("GET", me, "", session); r.Status != 200 || installDecode(t, r).Version != 0 {
		t.Fatalf("user's empty config %d %s", r.Status, r.Body)
	}

	// 1. PUT.
	put := `{"installs":[
		{"id":"nginx-cert","type":"copy","ob_type":"cert","ob_id":10,"from":["fullchain.pem","private.key"],"to":["/etc/nginx/ssl/site.crt","/etc/nginx/ssl/site.key"]},
		{"id":"ca","type":"import_ca","ob_type":"ca","ob_id":3},
		{"id":"rehash","type":"exec","ob_type":"ca","ob_id":3,"cmd":["update-ca-certificates"],"timeout_ms":60000,"env":{"LANG":"C"},"continue_on_error":true}
	],"after_update_script":"@@@BEGIN posix.sh\nsystemctl reload nginx\n@@@END"}`
	r = e.Do("PUT", base, put, session)
	installWant(t, r, 200, "")
	v1 := installDecode(t, r)
	if v1.Version != 1 || v1.ID == 0 || v1.UpdatedBy != fmt.Sprintf("user:%d", uid) || v1.AfterUpdateScript == nil || v1.CreatedAt == 0 ||
		!strings.Contains(string(v1.Installs[2]), `"cmd":["update-ca-certificates"]`) || !strings.Contains(string(v1.Installs[0]), `"enabled":true`) {
		t.Fatalf("after PUT: %s", r.Body)
	}
	self := installDecode(t, e.device("GET", "/apiv1/devices/self/install-config", "", d.ID))
	if self.Version != 1 || self.InstallsHash != v1.InstallsHash || len(self.Installs) != 3 {
		t.Fatalf("self after PUT: %+v", self)
	}

	// 2. Another PUT, then restore version 1.
	r = e.Do("PUT", me, `{"installs":[],"after_update_script":null}`, session)
	installWant(t, r, 200, "")
	if v2 := installDecode(t, r); v2.Version != 2 || len(v2.Installs) != 0 || v2.AfterUpdateScript != nil || v2.ID != v1.ID {
		t.Fatalf("second PUT %s", r.Body)
	}
	r = e.Do("POST", base+"/restore", `{"version":1}`, session)
	installWant(t, r, 200, "")
	v3 := installDecode(t, r)
	if v3.Version != 3 || v3.InstallsHash != v1.InstallsHash || *v3.AfterUpdateScript != *v1.AfterUpdateScript {
		t.Fatalf("restore %s", r.Body)
	}
	installWant(t, e.Do("POST", base+"/restore", `{"version":42}`, session), 404, "")
	installWant(t, e.Do("POST", base+"/restore", `{}`, session), 400, "version")

	// 3. The API-key patch, both body forms.
	key := e.apiKey(uid, identity.Permission{ObType: "ForInstallConfigUpdate", ObID: "*", Actions: []string{"update"}})
	r = e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":false,"to":"/ignored","x":1}]`, key)
	installWant(t, r, 200, "")
	v4 := installDecode(t, r)
	var msg struct{ Message string }
	json.Unmarshal(r.Data, &msg)
	if v4.Version != 4 || !strings.Contains(string(v4.Installs[0]), `"enabled":false`) || strings.Contains(string(v4.Installs[0]), "/ignored") ||
		!strings.HasPrefix(v4.UpdatedBy, "apikey:") || !strings.Contains(msg.Message, "version 4") {
		t.Fatalf("array patch %s", r.Body)
	}
	r = e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA,
		`{"patches":[{"ob_type":"ca","ob_id":3,"id":"rehash","cmd_argv":["update-ca-certificates","--fresh"]}],"after_update_script":null}`, key)
	installWant(t, r, 200, "")
	v5 := installDecode(t, r)
	if v5.Version != 5 || v5.AfterUpdateScript != nil || !strings.Contains(string(v5.Installs[2]), `"cmd":["update-ca-certificates","--fresh"]`) {
		t.Fatalf("object patch %s", r.Body)
	}
	// Script only; absent after_update_script keeps it.
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `{"patches":[],"after_update_script":"reload"}`, key), 200, "")
	r = e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `{"patches":[{"ob_type":"ca","ob_id":3,"enabled":true}]}`, key)
	installWant(t, r, 200, "")
	if v7 := installDecode(t, r); v7.Version != 7 || v7.AfterUpdateScript == nil || *v7.AfterUpdateScript != "reload" {
		t.Fatalf("patch without a script %s", r.Body)
	}
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"cmd":"reboot"}]`, key), 400, "patches[0].cmd")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":99,"enabled":true}]`, key), 400, "patches[0]")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":"10"}]`, key), 400, "patches[0]")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `"x"`, key), 400, "")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA2, `[{"ob_type":"cert","ob_id":10}]`, key), 404, "")

	// Exactly one install.updated per change, each after GET showed it.
	sigs := e.stream.all()
	if len(sigs) != 7 {
		t.Fatalf("%d signals for 7 changes", len(sigs))
	}
	for i, s := range sigs {
		var seen installDTO
		json.Unmarshal([]byte(s.got), &seen)
		v := int64(i + 1)
		if s.typ != "install.updated" || s.deviceID != d.ID || s.userID != uid || len(s.ref) != 3 ||
			s.ref["config_id"] != v1.ID || s.ref["version"] != v || s.ref["installs_hash_b64"] != seen.InstallsHash || seen.Version != v {
			t.Errorf("signal %d: %+v, GET then: %s", i, s, s.got)
		}
	}

	// History, newest first.
	r = e.Do("GET", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config-histories?limit=3", uid, d.ID), "", session)
	installWant(t, r, 200, "")
	var hist []installDTO
	if err := json.Unmarshal(r.Data, &hist); err != nil || len(hist) != 3 || hist[0].Version != 7 || hist[2].Version != 5 {
		t.Fatalf("history %s", r.Body)
	}
	installWant(t, e.Do("GET", fmt.Sprintf("/apiv1/me/devices/%d/install-config-histories?limit=0", d.ID), "", session), 400, "limit")

	// Validation names the field; nothing changes.
	installWant(t, e.Do("PUT", base, `{"installs":[{"type":"copy","ob_type":"cert","ob_id":1,"from":["certificate.pem"],"to":["etc/x"]}]}`, session), 400, "installs[0].to[0]")
	installWant(t, e.Do("PUT", base, `{"installs":[{"type":"exec","ob_type":"cert","ob_id":1,"cmd":"x"}]}`, session), 400, "installs[0].ob_type")
	installWant(t, e.Do("PUT", base, `{"after_update_script":"x"}`, session), 400, "installs")
	installWant(t, e.Do("PUT", base, `{"installs":[{"type":"exec","cmd":7}]}`, session), 400, "")
	if got := installDecode(t, e.device("GET", "/apiv1/devices/self/install-config", "", d.ID)); got.Version != 7 || len(e.stream.all()) != 7 {
		t.Fatalf("refused changes changed the config: version %d", got.Version)
	}
}

// TestNotifyScenario19: notify with agent_version is 204 and records the
// version; malformed events are 400; tokens are required.
func TestNotifyScenario19(t *testing.T) {
	e := newInstallEnv(t)
	_, uid := e.user("owner@example.com")
	d := e.register(uid, installPublicA)
	body := `{"schema":"certctrl.device.notify.v1","events":[{"type":"agent_version","agent":"cert-ctrl","version":"1.4.2","device_public_id":"` + installPublicA + `"}]}`
	r := e.device("POST", "/apiv1/devices/self/notify", body, d.ID)
	if r.Status != 204 || r.Body != "" {
		t.Fatalf("notify: %d %s", r.Status, r.Body)
	}
	info, ok, err := e.configs.AgentVersion(context.Background(), uid, d.ID)
	if err != nil || !ok || info.Version != "1.4.2" || info.Agent != "cert-ctrl" {
		t.Fatalf("agent version %+v %v %v", info, ok, err)
	}
	// Unknown events are ignored.
	if r := e.device("POST", "/apiv1/devices/self/notify", `{"schema":"certctrl.device.notify.v1","events":[{"type":"something.new","x":[1]}]}`, d.ID); r.Status != 204 {
		t.Fatalf("unknown event: %d %s", r.Status, r.Body)
	}
	for b, field := range map[string]string{
		`{"schema":"certctrl.device.notify.v1"}`:              "events",
		`{"schema":"certctrl.device.notify.v1","events":[]}`:  "events",
		`{"schema":"certctrl.device.notify.v1","events":{}}`:  "events",
		`{"events":[{"agent":"cert-ctrl","version":"1.0"}]}`:  "events[0].type",
		`{"events":["agent_version"]}`:                        "events[0]",
		`{"events":[{"type":"agent_version"}]}`:               "events[0].version",
		`{"schema":"v2","events":[{"type":"agent_version"}]}`: "schema",
		`[]`: "events",
		``:   "",
		`{`:  "",
	} {
		installWant(t, e.device("POST", "/apiv1/devices/self/notify", b, d.ID), 400, field)
	}
	if info, _, _ := e.configs.AgentVersion(context.Background(), uid, d.ID); info.Version != "1.4.2" {
		t.Fatalf("malformed notifies changed the version: %+v", info)
	}
	installWant(t, e.device("POST", "/apiv1/devices/self/notify", body, 0), 401, "")
	installWant(t, e.device("GET", "/apiv1/devices/self/install-config", "", 0), 401, "")

	// A deleted device's still-valid access token: 404, not a config.
	if err := e.devs.Delete(context.Background(), uid, d.ID); err != nil {
		t.Fatal(err)
	}
	installWant(t, e.device("POST", "/apiv1/devices/self/notify", body, d.ID), 404, "")
	installWant(t, e.device("GET", "/apiv1/devices/self/install-config", "", d.ID), 404, "")
}

// TestInstallConfigIsolation: another user can neither read nor change a
// device's config, API keys need their scope (for that device), and each
// device's token reads only its own config.
func TestInstallConfigIsolation(t *testing.T) {
	e := newInstallEnv(t)
	sessionA, uidA := e.user("a@example.com")
	sessionB, uidB := e.user("b@example.com")
	dA := e.register(uidA, installPublicA)
	dA2 := e.register(uidA, installPublicA2)
	dB := e.register(uidB, installPublicB)
	put := func(session string, uid, dev int64, certID int) {
		t.Helper()
		installWant(t, e.Do("PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", uid, dev),
			fmt.Sprintf(`{"installs":[{"type":"copy","ob_type":"cert","ob_id":%d,"from":["certificate.pem"],"to":["/x"]}]}`, certID), session), 200, "")
	}
	put(sessionA, uidA, dA.ID, 10)
	put(sessionB, uidB, dB.ID, 20)
	put(sessionB, uidB, dB.ID, 21)

	aPath := fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", uidA, dA.ID)
	installWant(t, e.Do("GET", aPath, "", sessionB), 403, "")
	installWant(t, e.Do("PUT", aPath, `{"installs":[]}`, sessionB), 403, "")
	installWant(t, e.Do("POST", aPath+"/restore", `{"version":1}`, sessionB), 403, "")
	installWant(t, e.Do("GET", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config-histories", uidA, dA.ID), "", sessionB), 403, "")
	// B's own paths with A's device id: not found.
	installWant(t, e.Do("GET", fmt.Sprintf("/apiv1/me/devices/%d/install-config", dA.ID), "", sessionB), 404, "")
	installWant(t, e.Do("PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", uidB, dA.ID), `{"installs":[]}`, sessionB), 404, "")
	installWant(t, e.Do("GET", fmt.Sprintf("/apiv1/me/devices/%d/install-config-histories", dA.ID), "", sessionB), 404, "")
	// B's automation key cannot reach A's device.
	keyB := e.apiKey(uidB, identity.Permission{ObType: "ForInstallConfigUpdate", ObID: "*", Actions: []string{"update"}})
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":false}]`, keyB), 404, "")
	installWant(t, e.Do("GET", aPath, "", keyB), 403, "")

	// A's keys: read-only devices cannot patch or PUT; a grant for one
	// device does not reach another; devices:update may patch.
	readKey := e.apiKey(uidA, identity.Permission{ObType: "devices", ObID: "*", Actions: []string{"read"}})
	installWant(t, e.Do("GET", aPath, "", readKey), 200, "")
	installWant(t, e.Do("PUT", aPath, `{"installs":[]}`, readKey), 403, "")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":false}]`, readKey), 403, "")
	oneKey := e.apiKey(uidA, identity.Permission{ObType: "ForInstallConfigUpdate", ObID: fmt.Sprint(dA2.ID), Actions: []string{"update"}})
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":false}]`, oneKey), 403, "")
	pubKey := e.apiKey(uidA, identity.Permission{ObType: "ForInstallConfigUpdate", ObID: installPublicA, Actions: []string{"update"}})
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":false}]`, pubKey), 200, "")
	devKey := e.apiKey(uidA, identity.Permission{ObType: "devices", ObID: "*", Actions: []string{"update"}})
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[{"ob_type":"cert","ob_id":10,"enabled":true}]`, devKey), 200, "")
	installWant(t, e.Do("POST", "/apiv1/me/install-config-update/"+installPublicA, `[]`, ""), 401, "")

	// Each device's token reads its own config only.
	for dev, want := range map[int64]struct {
		version int64
		cert    string
	}{dA.ID: {3, `"ob_id":10`}, dA2.ID: {0, ""}, dB.ID: {2, `"ob_id":21`}} {
		r := e.device("GET", "/apiv1/devices/self/install-config", "", dev)
		installWant(t, r, 200, "")
		c := installDecode(t, r)
		if c.UserDeviceID != dev || c.Version != want.version || (want.cert != "" && !strings.Contains(string(c.Installs[0]), want.cert)) {
			t.Errorf("device %d reads %s", dev, r.Data)
		}
	}
	// B's changes signalled B's device only; A's never reached B.
	for _, s := range e.stream.all() {
		if (s.deviceID == dB.ID) != (s.userID == uidB) {
			t.Errorf("signal %+v crosses users", s)
		}
	}
}
