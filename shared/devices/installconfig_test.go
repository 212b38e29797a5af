package devices_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/internal/testenv"
)

// signal is one recorded Signal call, with the config that GET returned
// while the signal was being sent.
type installSignal struct {
	userID, deviceID int64
	typ              string
	ref              map[string]any
	seen             devices.InstallConfig
}

// recorder is a Signaler that records every signal and, at signal time,
// reads the config back through the service.
type installRecorder struct {
	mu   sync.Mutex
	svc  *devices.InstallConfigs
	sigs []installSignal
	fail error
}

func (r *installRecorder) Signal(ctx context.Context, userID, deviceID int64, typ string, ref map[string]any) error {
	var seen devices.InstallConfig
	if r.svc != nil {
		c, err := r.svc.GetInstallConfig(ctx, userID, deviceID)
		if err != nil {
			return err
		}
		seen = c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sigs = append(r.sigs, installSignal{userID, deviceID, typ, ref, seen})
	return r.fail
}

func (r *installRecorder) all() []installSignal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sigs)
}

type installFixture struct {
	svc    *devices.InstallConfigs
	devs   *devices.Service
	sig    *installRecorder
	device devices.Device
}

func newInstallFixture(t *testing.T) *installFixture {
	t.Helper()
	p := testenv.New(t)
	devs := devices.New(p.Store, &revoked{}, devices.Config{})
	sig := &installRecorder{}
	svc := devices.NewInstallConfigs(p.Store, devs, sig, devices.InstallConfigsConfig{Now: p.Clock.Now, Log: p.Log})
	sig.svc = svc
	_, pk := newKey(t)
	d, _, err := devs.Register(context.Background(), 1, devices.Registration{PublicID: publicID, PublicKeyB64: pk})
	if err != nil {
		t.Fatal(err)
	}
	return &installFixture{svc: svc, devs: devs, sig: sig, device: d}
}

func installCopyItem(certID int64, to ...string) devices.InstallItem {
	from := []string{"certificate.pem", "private.key", "fullchain.pem"}[:len(to)]
	return devices.InstallItem{ID: fmt.Sprintf("copy-%d", certID), Type: "copy", ObType: "cert", ObID: certID, From: from, To: to}
}

func installHashOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func installWantField(t *testing.T, err error, field string) {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Field != field {
		t.Fatalf("error %v; want Invalid naming %q", err, field)
	}
}

func TestInstallConfigEmptyAndOwnership(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	c, err := f.svc.GetInstallConfig(ctx, 1, f.device.ID)
	if err != nil || c.ID != 0 || c.Version != 0 || c.Installs == nil || len(c.Installs) != 0 || c.UserDeviceID != f.device.ID {
		t.Fatalf("empty config = %+v, %v", c, err)
	}
	b, _ := json.Marshal(c)
	var dto map[string]any
	json.Unmarshal(b, &dto)
	if dto["id"] != 0.0 || dto["version"] != 0.0 || fmt.Sprint(dto["installs"]) != "[]" || dto["user_device_id"] != float64(f.device.ID) {
		t.Fatalf("empty DTO %s", b)
	}
	// Another user's device, and a missing one: NotFound everywhere.
	script := "x"
	for name, err := range map[string]error{
		"get":     func() error { _, err := f.svc.GetInstallConfig(ctx, 2, f.device.ID); return err }(),
		"missing": func() error { _, err := f.svc.GetInstallConfig(ctx, 1, f.device.ID+100); return err }(),
		"put":     func() error { _, err := f.svc.PutInstallConfig(ctx, 2, f.device.ID, nil, nil, ""); return err }(),
		"patch": func() error {
			_, err := f.svc.PatchInstallConfig(ctx, 2, f.device.ID, nil, &script)
			return err
		}(),
		"restore": func() error { _, err := f.svc.RestoreInstallConfig(ctx, 2, f.device.ID, 1); return err }(),
		"history": func() error { _, err := f.svc.InstallConfigHistory(ctx, 2, f.device.ID, 0); return err }(),
		"notify":  f.svc.RecordNotify(ctx, 2, f.device.ID, []devices.NotifyEvent{{Type: "agent_version", Version: "1"}}),
	} {
		if apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("%s as another user: %v", name, err)
		}
	}
	if len(f.sig.all()) != 0 {
		t.Fatalf("signals for refused changes: %+v", f.sig.all())
	}
}

func TestInstallConfigValidationNamesTheField(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	good := installCopyItem(10, "/etc/ssl/cert.pem")
	tooMany := make([]devices.InstallItem, devices.MaxInstallItems+1)
	for i := range tooMany {
		tooMany[i] = devices.InstallItem{Type: "copy", ObType: "cert", ObID: int64(i + 1)}
	}
	bigScript := strings.Repeat("x", devices.MaxAfterUpdateScript+1)
	for _, tc := range []struct {
		field    string
		installs []devices.InstallItem
		script   *string
	}{
		{"installs[1].type", []devices.InstallItem{good, {Type: "shell", Cmd: devices.InstallCmd{Shell: "true"}}}, nil},
		{"installs[0].type", []devices.InstallItem{{ObType: "cert", ObID: 1}}, nil},
		{"installs[0].ob_type", []devices.InstallItem{{Type: "copy", ObID: 1}}, nil},
		{"installs[0].ob_type", []devices.InstallItem{{Type: "copy", ObType: "key", ObID: 1}}, nil},
		{"installs[0].ob_id", []devices.InstallItem{{Type: "copy", ObType: "cert"}}, nil},
		{"installs[0].ob_type", []devices.InstallItem{{Type: "import_ca", ObType: "cert", ObID: 3}}, nil},
		{"installs[0].ob_id", []devices.InstallItem{{Type: "import_ca", ObType: "ca"}}, nil},
		{"installs[2].to", []devices.InstallItem{good, installGood2(), {Type: "copy", ObType: "cert", ObID: 7, From: []string{"certificate.pem", "chain.pem"}, To: []string{"/a"}}}, nil},
		{"installs[0].to[1]", []devices.InstallItem{{Type: "copy", ObType: "cert", ObID: 7, From: []string{"certificate.pem", "chain.pem"}, To: []string{"/a", "relative/b"}}}, nil},
		{"installs[0].from[0]", []devices.InstallItem{{Type: "copy", ObType: "ca", ObID: 7, From: []string{"private.key"}, To: []string{"/a"}}}, nil},
		{"installs[0].ob_type", []devices.InstallItem{{Type: "exec", ObType: "cert", ObID: 7, Cmd: devices.InstallCmd{Shell: "systemctl reload nginx"}}}, nil},
		{"installs[0].cmd", []devices.InstallItem{{Type: "exec"}}, nil},
		{"installs[0].cmd", []devices.InstallItem{{Type: "copy", ObType: "cert", ObID: 1, Cmd: devices.InstallCmd{Shell: "x"}}}, nil},
		{"installs[0].timeout_ms", []devices.InstallItem{{Type: "exec", Cmd: devices.InstallCmd{Shell: "x"}, TimeoutMS: -1}}, nil},
		{"installs[0].timeout_ms", []devices.InstallItem{{Type: "exec", Cmd: devices.InstallCmd{Shell: "x"}, TimeoutMS: devices.MaxInstallTimeoutMS + 1}}, nil},
		{"installs[0].verify", []devices.InstallItem{{Type: "exec", Cmd: devices.InstallCmd{Shell: "x"}, Verify: json.RawMessage(`[1]`)}}, nil},
		{"installs[1].id", []devices.InstallItem{good, good}, nil},
		{"installs", tooMany, nil},
		{"after_update_script", nil, &bigScript},
	} {
		_, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, tc.installs, tc.script, "test")
		installWantField(t, err, tc.field)
	}
	if c, err := f.svc.GetInstallConfig(ctx, 1, f.device.ID); err != nil || c.Version != 0 || len(f.sig.all()) != 0 {
		t.Fatalf("refused puts changed the config: %+v %v, signals %d", c, err, len(f.sig.all()))
	}
	// Windows paths, "" entries, an argv command, a CA copy, an
	// import_ca and an exec item on a CA are all fine; 100 items too.
	ok := []devices.InstallItem{
		{Type: "copy", ObType: "cert", ObID: 5, From: []string{"fullchain.pem", "private.key", "meta.json"}, To: []string{`C:\certs\full.pem`, "", `\\srv\share\m.json`}},
		{Type: "copy", ObType: "ca", ObID: 2, From: []string{"ca.pem"}, To: []string{"/usr/local/share/ca-certificates/x.crt"}},
		{Type: "import_ca", ObType: "ca", ObID: 2},
		{Type: "exec", ObType: "ca", ObID: 2, Cmd: devices.InstallCmd{Argv: []string{"update-ca-certificates"}}, TimeoutMS: 60000,
			Env: map[string]string{"PATH": "/usr/bin"}, Verify: json.RawMessage(`{"b":1,"a":2}`)},
	}
	if _, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, ok, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, tooMany[:devices.MaxInstallItems], nil, "test"); err != nil {
		t.Fatal(err)
	}
}

func installGood2() devices.InstallItem { return installCopyItem(11, "/etc/ssl/other.pem") }

func TestInstallConfigVersionsHashAndSignal(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	script := "@@@BEGIN posix.sh\nsystemctl reload nginx\n@@@END"
	installs := []devices.InstallItem{installCopyItem(10, "/etc/ssl/cert.pem", "/etc/ssl/key.pem")}
	c1, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, installs, &script, "user:1")
	if err != nil {
		t.Fatal(err)
	}
	if c1.ID == 0 || c1.Version != 1 || c1.UpdatedBy != "user:1" || *c1.AfterUpdateScript != script || c1.CreatedAt.IsZero() ||
		c1.Installs[0].Enabled == nil || !*c1.Installs[0].Enabled {
		t.Fatalf("first version %+v", c1)
	}
	// The hash is the standard base64 SHA-256 of the installs' JSON as
	// the DTO carries them.
	var dto struct {
		Installs     json.RawMessage `json:"installs"`
		InstallsHash string          `json:"installs_hash"`
		CreatedAt    int64           `json:"created_at"`
	}
	b, _ := json.Marshal(c1)
	json.Unmarshal(b, &dto)
	if want := installHashOf(t, c1.Installs); dto.InstallsHash != want || c1.InstallsHash != want || devices.InstallsHash(c1.Installs) != want {
		t.Fatalf("hash %q, want %q (installs %s)", dto.InstallsHash, want, dto.Installs)
	}
	if dto.CreatedAt != c1.CreatedAt.Unix() || !strings.Contains(string(dto.Installs), `"enabled":true`) {
		t.Fatalf("DTO %s", b)
	}

	disabled := false
	installs[0].Enabled = &disabled
	c2, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, installs, nil, "user:1")
	if err != nil || c2.Version != 2 || c2.ID != c1.ID || c2.InstallsHash == c1.InstallsHash || c2.AfterUpdateScript != nil ||
		!c2.CreatedAt.Equal(c1.CreatedAt) {
		t.Fatalf("second version %+v %v", c2, err)
	}
	c3, err := f.svc.RestoreInstallConfig(devices.ContextWithUpdatedBy(ctx, "user:9"), 1, f.device.ID, 1)
	if err != nil || c3.Version != 3 || c3.InstallsHash != c1.InstallsHash || *c3.AfterUpdateScript != script ||
		c3.RestoredFrom != 1 || c3.UpdatedBy != "user:9" {
		t.Fatalf("restore %+v %v", c3, err)
	}
	if _, err := f.svc.RestoreInstallConfig(ctx, 1, f.device.ID, 9); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("restoring a missing version: %v", err)
	}
	if _, err := f.svc.RestoreInstallConfig(ctx, 1, f.device.ID, 0); apperr.CodeOf(err) != apperr.Invalid {
		t.Fatalf("restoring version 0: %v", err)
	}

	// One install.updated per change, sent after GET already shows it.
	sigs := f.sig.all()
	if len(sigs) != 3 {
		t.Fatalf("%d signals, want 3", len(sigs))
	}
	for i, s := range sigs {
		v := int64(i + 1)
		if s.typ != devices.SignalInstallUpdated || s.userID != 1 || s.deviceID != f.device.ID ||
			s.ref["config_id"] != c1.ID || s.ref["version"] != v || s.ref["installs_hash_b64"] != s.seen.InstallsHash ||
			s.seen.Version != v || len(s.ref) != 3 {
			t.Errorf("signal %d: %+v (GET showed version %d)", i, s, s.seen.Version)
		}
	}

	// History: newest first, with a limit.
	hist, err := f.svc.InstallConfigHistory(ctx, 1, f.device.ID, 0)
	if err != nil || len(hist) != 3 || hist[0].Version != 3 || hist[1].Version != 2 || hist[2].Version != 1 ||
		hist[1].InstallsHash != c2.InstallsHash {
		t.Fatalf("history %+v %v", hist, err)
	}
	if hist, err = f.svc.InstallConfigHistory(ctx, 1, f.device.ID, 2); err != nil || len(hist) != 2 || hist[0].Version != 3 {
		t.Fatalf("history limit 2: %+v %v", hist, err)
	}

	// A failing stream: the change is stored, the error says so.
	f.sig.fail = errors.New("stream down")
	c4, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, installs, nil, "")
	if err == nil || !strings.Contains(err.Error(), "saved") || c4.Version != 4 {
		t.Fatalf("put with a failing stream: %+v %v", c4, err)
	}
	if got, _ := f.svc.GetInstallConfig(ctx, 1, f.device.ID); got.Version != 4 {
		t.Fatalf("version after a failed signal: %d", got.Version)
	}
}

func TestInstallConfigConcurrentPutsKeepEveryVersion(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, []devices.InstallItem{installCopyItem(int64(i+1), "/etc/ssl/c.pem")}, nil, fmt.Sprint(i))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := f.svc.GetInstallConfig(ctx, 1, f.device.ID)
	if err != nil || c.Version != writers {
		t.Fatalf("after %d writers: version %d, %v", writers, c.Version, err)
	}
	hist, err := f.svc.InstallConfigHistory(ctx, 1, f.device.ID, 100)
	if err != nil || len(hist) != writers {
		t.Fatalf("history %d items, %v", len(hist), err)
	}
	writersSeen := map[string]bool{}
	for i, h := range hist {
		if h.Version != int64(writers-i) || h.ID != c.ID {
			t.Fatalf("history[%d] is version %d (id %d)", i, h.Version, h.ID)
		}
		writersSeen[h.UpdatedBy] = true
	}
	var versions []int64
	for _, s := range f.sig.all() {
		versions = append(versions, s.ref["version"].(int64))
	}
	slices.Sort(versions)
	if len(writersSeen) != writers || !slices.Equal(versions, []int64{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("writers %v, signalled versions %v", writersSeen, versions)
	}
}

func TestInstallConfigPatch(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	base := []devices.InstallItem{
		installCopyItem(10, "/etc/ssl/cert.pem"),
		{ID: "ca-copy", Type: "copy", ObType: "ca", ObID: 3, From: []string{"ca.pem"}, To: []string{"/etc/ssl/ca.pem"}},
		{ID: "ca-reload", Type: "exec", ObType: "ca", ObID: 3, Cmd: devices.InstallCmd{Shell: "update-ca-certificates"}},
		installCopyItem(20, "/srv/other.pem"),
	}
	if _, err := f.svc.PutInstallConfig(ctx, 1, f.device.ID, base, nil, "user:1"); err != nil {
		t.Fatal(err)
	}
	parse := func(s string) []devices.InstallPatch {
		var ps []devices.InstallPatch
		if err := json.Unmarshal([]byte(s), &ps); err != nil {
			t.Fatal(err)
		}
		return ps
	}

	// A cert patch with applied and unknown keys; a CA patch by id with
	// cmd_argv, timeout and env.
	script := "systemctl reload nginx"
	c, err := f.svc.PatchInstallConfig(devices.ContextWithUpdatedBy(ctx, "apikey:7"), 1, f.device.ID, parse(`[
		{"ob_type":"cert","ob_id":10,"enabled":false,"to":"/etc/ssl/elsewhere.pem","from":["x"],"ob_name":"renamed","bogus":{"a":1}},
		{"ob_type":"ca","ob_id":3,"id":"ca-reload","cmd_argv":["update-ca-certificates","--fresh"],"timeout_ms":45000,"env":{"LANG":"C"}}
	]`), &script)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 2 || c.UpdatedBy != "apikey:7" || c.AfterUpdateScript == nil || *c.AfterUpdateScript != script {
		t.Fatalf("patched config %+v", c)
	}
	cert, caCopy, caExec, other := c.Installs[0], c.Installs[1], c.Installs[2], c.Installs[3]
	if cert.IsEnabled() || cert.To[0] != "/etc/ssl/cert.pem" || cert.From[0] != "certificate.pem" || cert.ObName != "" {
		t.Errorf("cert item after patch: %+v", cert)
	}
	if !slices.Equal(caExec.Cmd.Argv, []string{"update-ca-certificates", "--fresh"}) || caExec.Cmd.Shell != "" ||
		caExec.TimeoutMS != 45000 || caExec.Env["LANG"] != "C" {
		t.Errorf("exec item after patch: %+v", caExec)
	}
	if !caCopy.IsEnabled() || caCopy.TimeoutMS != 0 || caCopy.Env != nil || !other.IsEnabled() {
		t.Errorf("unmatched items changed: %+v %+v", caCopy, other)
	}
	b, _ := json.Marshal(caExec)
	if !strings.Contains(string(b), `"cmd":["update-ca-certificates","--fresh"]`) || strings.Contains(string(b), "cmd_argv") {
		t.Errorf("argv item JSON %s", b)
	}

	// cmd as a string replaces the argv; type and env null; script kept
	// when nil.
	c, err = f.svc.PatchInstallConfig(ctx, 1, f.device.ID, parse(`[{"ob_type":"ca","ob_id":3,"id":"ca-reload","cmd":"c_rehash","env":null,"timeout_ms":null}]`), nil)
	if err != nil || c.Version != 3 || c.Installs[2].Cmd.Shell != "c_rehash" || c.Installs[2].Cmd.Argv != nil ||
		c.Installs[2].Env != nil || c.Installs[2].TimeoutMS != 0 || c.AfterUpdateScript == nil {
		t.Fatalf("second patch %+v %v", c, err)
	}
	// Without an id, every item of the object matches: both CA items
	// become disabled.
	c, err = f.svc.PatchInstallConfig(ctx, 1, f.device.ID, parse(`[{"ob_type":"ca","ob_id":3,"enabled":false}]`), nil)
	if err != nil || c.Installs[1].IsEnabled() || c.Installs[2].IsEnabled() || c.Version != 4 {
		t.Fatalf("patch by object %+v %v", c, err)
	}
	// Removing the script alone ("" means remove).
	empty := ""
	if c, err = f.svc.PatchInstallConfig(ctx, 1, f.device.ID, nil, &empty); err != nil || c.AfterUpdateScript != nil || c.Version != 5 {
		t.Fatalf("script removal %+v %v", c, err)
	}

	// Refusals name the field and change nothing.
	for _, tc := range []struct{ patches, field string }{
		{`[{"ob_type":"cert","ob_id":10,"cmd":"systemctl reload nginx"}]`, "patches[0].cmd"},
		{`[{"ob_type":"cert","ob_id":10,"cmd_argv":["x"]}]`, "patches[0].cmd"},
		{`[{"ob_id":10,"enabled":true}]`, "patches[0].ob_type"},
		{`[{"ob_type":"cert","enabled":true}]`, "patches[0].ob_id"},
		{`[{"ob_type":"cert","ob_id":10},{"ob_type":"cert","ob_id":99,"enabled":true}]`, "patches[1]"},
		{`[{"ob_type":"ca","ob_id":3,"id":"nope","enabled":true}]`, "patches[0]"},
		{`[{"ob_type":"ca","ob_id":3,"id":"ca-reload","timeout_ms":-5}]`, "installs[2].timeout_ms"},
		{`[{"ob_type":"cert","ob_id":20,"type":"exec"}]`, "installs[3].ob_type"},
		{`[]`, "patches"},
	} {
		_, err := f.svc.PatchInstallConfig(ctx, 1, f.device.ID, parse(tc.patches), nil)
		installWantField(t, err, tc.field)
	}
	var p devices.InstallPatch
	if err := json.Unmarshal([]byte(`{"ob_type":"ca","ob_id":"3"}`), &p); err == nil || !strings.Contains(err.Error(), "ob_id") {
		t.Fatalf("string ob_id: %v", err)
	}
	if got, _ := f.svc.GetInstallConfig(ctx, 1, f.device.ID); got.Version != 5 || len(f.sig.all()) != 5 {
		t.Fatalf("refused patches changed the config: version %d, %d signals", got.Version, len(f.sig.all()))
	}
}

func TestNotify(t *testing.T) {
	f := newInstallFixture(t)
	ctx := context.Background()
	if _, ok, err := f.svc.AgentVersion(ctx, 1, f.device.ID); ok || err != nil {
		t.Fatalf("agent version before notify: %v %v", ok, err)
	}
	schema, events, err := devices.ParseNotify([]byte(`{"schema":"certctrl.device.notify.v1","events":[
		{"type":"heartbeat","n":1},
		{"type":"agent_version","agent":"cert-ctrl","version":"1.4.2","device_public_id":"` + publicID + `"}]}`))
	if err != nil || schema != devices.NotifySchema || len(events) != 2 {
		t.Fatalf("ParseNotify = %q %+v %v", schema, events, err)
	}
	if err := f.svc.RecordNotify(ctx, 1, f.device.ID, events); err != nil {
		t.Fatal(err)
	}
	info, ok, err := f.svc.AgentVersion(ctx, 1, f.device.ID)
	if err != nil || !ok || info.Version != "1.4.2" || info.Agent != "cert-ctrl" || info.DevicePublicID != publicID || info.ReportedAt.IsZero() {
		t.Fatalf("agent version %+v %v %v", info, ok, err)
	}
	// A newer version replaces it; the device record is untouched.
	if err := f.svc.RecordNotify(ctx, 1, f.device.ID, []devices.NotifyEvent{{Type: "agent_version", Version: "1.5.0"}}); err != nil {
		t.Fatal(err)
	}
	if info, _, _ := f.svc.AgentVersion(ctx, 1, f.device.ID); info.Version != "1.5.0" {
		t.Fatalf("agent version after update %+v", info)
	}
	if d, _ := f.devs.Get(ctx, 1, f.device.ID); d.AppVersion != f.device.AppVersion {
		t.Fatalf("device record changed: %+v", d)
	}
	// Only unknown events: accepted, nothing recorded.
	if err := f.svc.RecordNotify(ctx, 1, f.device.ID, []devices.NotifyEvent{{Type: "future.thing"}}); err != nil {
		t.Fatal(err)
	}
	for body, field := range map[string]string{
		`{"schema":"certctrl.device.notify.v1"}`: "events",
		`{"events":[]}`:                          "events",
		`{"events":{}}`:                          "events",
		`{"events":"agent_version"}`:             "events",
		`{"events":[1]}`:                         "events[0]",
		`{"events":[{"type":"agent_version","version":"1"},{"version":"1"}]}`: "events[1].type",
		`{"events":[{"type":7}]}`: "events[0].type",
		`{"schema":"other.v2","events":[{"type":"agent_version","version":"1"}]}`: "schema",
		`{"events":[{"type":"agent_version","version":1.5}]}`:                     "events[0].version",
		`[{"type":"agent_version"}]`:                                              "events",
	} {
		_, _, err := devices.ParseNotify([]byte(body))
		installWantField(t, err, field)
	}
	// No schema is accepted (the agent always sends it, scripts may not).
	if _, ev, err := devices.ParseNotify([]byte(`{"events":[{"type":"agent_version","version":"2.0.0"}]}`)); err != nil || len(ev) != 1 {
		t.Fatalf("no schema: %v", err)
	}
	installWantField(t, f.svc.RecordNotify(ctx, 1, f.device.ID, nil), "events")
	installWantField(t, f.svc.RecordNotify(ctx, 1, f.device.ID, []devices.NotifyEvent{{Type: "agent_version"}}), "events[0].version")
	installWantField(t, f.svc.RecordNotify(ctx, 1, f.device.ID, []devices.NotifyEvent{{Type: "agent_version", Version: strings.Repeat("9", 65)}}), "events[0].version")
}
