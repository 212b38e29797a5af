package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/agent"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/identity"
)

// localServer starts the local server over httptest with an active user.
func localServer(t *testing.T, email string) (*app.App, *httptest.Server, identity.User) {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": t.TempDir(), "CERTFLEET_LOG_LEVEL": "warn", "CERTFLEET_SHUTDOWN_TIMEOUT": "10s"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	u, err := a.Identity.Register(ctx, identity.Registration{Email: email, Password: "Agent1Owner", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	return a, srv, u
}

// TestAgentAgainstLocalServer runs the commands (through run, not a
// subprocess) against the local server: login with an API key, an
// install config reaching the device through install.updated, a token
// refresh after the access token is lost, and an idle poll.
func TestAgentAgainstLocalServer(t *testing.T) {
	ctx := context.Background()
	a, srv, u := localServer(t, "agent@example.com")
	var perms []identity.Permission
	for _, s := range identity.Catalog {
		if s.ObType == "ForDeviceAuthenticate" || s.ObType == "devices" || s.ObType == "certificates" {
			perms = append(perms, identity.Permission{ObType: s.ObType, ObID: "*", Actions: s.Actions})
		}
	}
	_, key, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "agent", Permissions: perms})
	if err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(t.TempDir(), "state")
	var out, errOut bytes.Buffer
	cmd := func(args ...string) {
		t.Helper()
		out.Reset()
		if err := run(ctx, append(args, "--state", state), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s%s", args, err, out.String(), errOut.String())
		}
	}
	if err := run(ctx, []string{"updates", "--state", state}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "login") {
		t.Fatalf("updates before login: %v", err)
	}
	cmd("login", "--server", srv.URL, "--apikey", key)
	ag := agent.New(state, io.Discard)
	deviceID := ag.DeviceID()
	if deviceID == 0 || !strings.Contains(out.String(), fmt.Sprintf("registered device %d", deviceID)) {
		t.Fatalf("login:\n%s", out.String())
	}
	// A second login keeps the device (same key and device_public_id).
	publicID := ag.DevicePublicID()
	cmd("login", "--server", srv.URL, "--apikey", key)
	if ag.DeviceID() != deviceID || ag.DevicePublicID() != publicID {
		t.Fatalf("second login: device %d %s", ag.DeviceID(), ag.DevicePublicID())
	}

	// The install config arrives with install.updated; the certificate it
	// copies is not assigned (404): nothing is installed, no failure.
	dst := filepath.Join(t.TempDir(), "web.pem")
	put := fmt.Sprintf(`{"installs":[{"id":"web","type":"copy","ob_type":"cert","ob_id":7,"from":["fullchain.pem"],"to":[%q]}]}`, dst)
	req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/apiv1/users/%d/devices/%d/install-config", srv.URL, u.ID, deviceID), strings.NewReader(put))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("put install config: %d", resp.StatusCode)
	}
	cmd("updates")
	if !strings.Contains(out.String(), "saved install config version 1") || !strings.Contains(out.String(), "certificate 7 is not ready yet") {
		t.Fatalf("updates:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(state, "install_config.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("%s exists: %v", dst, err)
	}

	// A lost access token is refreshed once with the refresh token.
	sessPath := filepath.Join(state, "session.json")
	var sess map[string]any
	raw, _ := os.ReadFile(sessPath)
	json.Unmarshal(raw, &sess)
	sess["access_token"] = "not-a-token"
	raw, _ = json.Marshal(sess)
	os.WriteFile(sessPath, raw, 0o600)
	cmd("updates")
	if !strings.Contains(out.String(), "refreshed the session tokens") || !strings.Contains(out.String(), "no updates") {
		t.Fatalf("updates after losing the access token:\n%s", out.String())
	}

	// state.resync_required from the stream is a full resync, once: the
	// next poll does not replay the stream.
	if err := a.Stream.Signal(ctx, u.ID, deviceID, devices.SignalResync, map[string]any{"action": "full_resync", "reason": "test"}); err != nil {
		t.Fatal(err)
	}
	cmd("updates")
	if !strings.Contains(out.String(), "the server asks for a full resync") {
		t.Fatalf("updates with state.resync_required:\n%s", out.String())
	}
	cmd("updates")
	if strings.Contains(out.String(), "full resync") || !strings.Contains(out.String(), "no updates") {
		t.Fatalf("the poll after a resync:\n%s", out.String())
	}
}

// fakeServer is a scripted device API serving a certificate whose
// materials are sealed with the server-side code (shared/devices).
type fakeServer struct {
	t       *testing.T
	mu      sync.Mutex
	devPK   []byte
	access  string
	refresh string
	polls   []func(w http.ResponseWriter, r *http.Request) // scripted answers to GET updates, in order
	inm     []string                                       // If-None-Match of each poll
	notify  int
	cert    []byte // PEM leaf + chain
	keyDER  []byte // PKCS #8
	plain   bool   // deploy materials in the plaintext scheme
	script  string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	write := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	switch {
	case r.Method == "POST" && r.URL.Path == "/apiv1/me/devices":
		f.devPK, _ = base64.StdEncoding.DecodeString(body["dev_pk"].(string))
		f.access, f.refresh = "access-1", "refresh-1"
		write(201, map[string]any{"data": map[string]any{"device": map[string]any{"id": "5"},
			"session": map[string]any{"access_token": f.access, "refresh_token": f.refresh, "expires_in": 3600}}})
		return
	case r.Method == "POST" && r.URL.Path == "/auth/refresh":
		if body["refresh_token"] != f.refresh {
			write(401, map[string]any{"error": map[string]any{"code": 10003, "what": "refresh token rotated"}})
			return
		}
		f.access, f.refresh = "access-2", "refresh-2"
		write(200, map[string]any{"data": map[string]any{"session": map[string]any{"access_token": f.access, "refresh_token": f.refresh}}})
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.access {
		write(401, map[string]any{"error": map[string]any{"code": 5018, "what": "unauthorized"}})
		return
	}
	switch r.URL.Path {
	case "/apiv1/devices/self/notify":
		f.notify++
		// The first access token expires right after the notify.
		if f.access == "access-1" {
			f.access = "access-expired"
		}
		w.WriteHeader(204)
	case "/apiv1/devices/self/updates":
		if len(f.polls) == 0 {
			f.t.Errorf("unexpected poll %s", r.URL)
			w.WriteHeader(500)
			return
		}
		f.inm = append(f.inm, r.Header.Get("If-None-Match"))
		next := f.polls[0]
		f.polls = f.polls[1:]
		next(w, r)
	case "/apiv1/devices/self/install-config":
		write(200, map[string]any{"data": map[string]any{"id": 1, "user_device_id": 5, "version": 3,
			"installs":            []any{map[string]any{"id": "web", "type": "copy", "ob_type": "cert", "ob_id": 7, "from": []string{"private.key", "fullchain.pem"}, "to": f.paths()}},
			"after_update_script": f.script}})
	case "/apiv1/devices/self/certificates/7":
		write(200, map[string]any{"data": map[string]any{"certificate": map[string]any{"id": 7, "certificate_pem": string(f.cert)}}})
	case "/apiv1/devices/self/certificates/7/deploy-materials":
		if f.plain {
			write(200, map[string]any{"data": map[string]any{"enc_scheme": "plaintext", "private_key_der_b64": f.keyDER}})
			return
		}
		k := make([]byte, 32)
		rand.Read(k)
		ct, nonce, tag, err := devices.SealPrivateKey(k, f.keyDER)
		if err != nil {
			f.t.Error(err)
		}
		enc, err := devices.SealDataKey(k, f.devPK)
		if err != nil {
			f.t.Error(err)
		}
		write(200, map[string]any{"data": map[string]any{"enc_scheme": "aes256gcm", "wrap_alg": "x25519",
			"device_keyfp_b64": devices.KeyFingerprint(f.devPK), "enc_data_key_b64": enc,
			"enc_privkey_b64": ct, "privkey_nonce_b64": nonce, "privkey_tag_b64": tag}})
	default:
		write(404, map[string]any{"error": map[string]any{"code": 5003, "what": "not found"}})
	}
}

var fakeDir string

func (f *fakeServer) paths() []string {
	return []string{filepath.Join(fakeDir, "ssl", "web.key"), filepath.Join(fakeDir, "ssl", "web.pem")}
}

// newCert makes a self-signed leaf with a fake chain.
func (f *fakeServer) newCert(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "web.example"},
		DNSNames: []string{"web.example"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	f.keyDER, _ = x509.MarshalPKCS8PrivateKey(key)
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	f.cert = append(leaf, leaf...) // the "chain" is the leaf again
}

// TestAgentPollingProtocol drives the agent against a scripted server:
// the version notify, the first run's full resync, a refresh after 401,
// 429 Retry-After, a 409 cursor gap (full resync), AEAD materials sealed
// by the server code, the cursor sent back as If-None-Match, 204 and a
// plaintext-scheme renewal.
func TestAgentPollingProtocol(t *testing.T) {
	ctx := context.Background()
	fakeDir = t.TempDir()
	marker := filepath.Join(fakeDir, "marker")
	f := &fakeServer{t: t, script: "#!/bin/sh\necho \"$1\" >> '" + marker + "'\n"}
	f.newCert(t)
	srv := httptest.NewServer(f)
	defer srv.Close()
	signals := func(cursor string, sig ...map[string]any) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("ETag", `"`+cursor+`"`)
			w.Header().Set("X-Poll-Interval", "42")
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"cursor": cursor, "signals": sig}})
		}
	}
	certUpdated := func(ts int64) map[string]any {
		return map[string]any{"type": "cert.updated", "ts_ms": ts, "ref": map[string]any{"cert_id": 7, "wrap_ready": true}}
	}
	f.polls = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
		},
		func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(409)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": 40901, "what": "cursor trimmed",
				"params": map[string]any{"action": "full_resync", "reset_cursor": true, "reason": "cursor_trimmed"}}})
		},
		signals("3-0", certUpdated(1000)), // the re-poll after the resync: same materials, nothing changes
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("ETag", `"3-0"`)
			w.WriteHeader(204)
		},
		signals("4-0", certUpdated(2000), map[string]any{"type": "something.new", "ts_ms": 2001, "ref": map[string]any{}}),
	}

	var out bytes.Buffer
	ag := agent.New(filepath.Join(fakeDir, "state"), &out)
	if err := ag.Login(ctx, agent.LoginOptions{Server: srv.URL, APIKey: "key"}); err != nil {
		t.Fatal(err)
	}
	if ag.DeviceID() != 5 {
		t.Fatalf("device id %d", ag.DeviceID())
	}

	// 1: notify, the first run's full resync (401 → refresh) installs,
	// then the poll gets 429 with Retry-After.
	p, err := ag.Updates(ctx)
	var re *agent.RetryError
	if !errorsAs(err, &re) || re.After != 7*time.Second || f.notify != 1 || f.access != "access-2" || p.Installed != 2 {
		t.Fatalf("first poll: %+v %v notify=%d access=%s\n%s", p, err, f.notify, f.access, out.String())
	}
	paths := f.paths()
	checkFiles(t, paths[0], paths[1], f.cert)
	// 2: 409 → full resync installs the files lost meanwhile; the
	// re-poll's cert.updated finds the same files.
	for _, p := range paths {
		os.Remove(p)
	}
	p, err = ag.Updates(ctx)
	if err != nil || p.PollInterval != 42*time.Second || p.Installed != 2 {
		t.Fatalf("resync: %+v %v\n%s", p, err, out.String())
	}
	keyPEM := checkFiles(t, paths[0], paths[1], f.cert)
	if got, _ := os.ReadFile(marker); string(got) != "state.resync_required\nstate.resync_required\n" {
		t.Fatalf("marker %q\n%s", got, out.String())
	}
	// 3: 204 with the cursor sent back.
	out.Reset()
	if _, err := ag.Updates(ctx); err != nil || !strings.Contains(out.String(), "no updates") {
		t.Fatalf("idle: %v\n%s", err, out.String())
	}
	// 4: a renewal in the plaintext scheme replaces the files; the
	// unknown signal is ignored.
	f.mu.Lock()
	f.newCert(t)
	f.plain = true
	f.mu.Unlock()
	if _, err := ag.Updates(ctx); err != nil {
		t.Fatalf("renewal: %v\n%s", err, out.String())
	}
	if checkFiles(t, paths[0], paths[1], f.cert) == keyPEM {
		t.Fatal("the key was not replaced")
	}
	if got, _ := os.ReadFile(marker); string(got) != "state.resync_required\nstate.resync_required\ncert.updated\n" {
		t.Fatalf("marker %q\n%s", got, out.String())
	}
	if want := []string{"", "", "", `"3-0"`, `"3-0"`}; fmt.Sprint(f.inm) != fmt.Sprint(want) {
		t.Fatalf("If-None-Match %q, want %q", f.inm, want)
	}
	if f.notify != 1 || len(f.polls) != 0 {
		t.Fatalf("notify %d, %d polls left", f.notify, len(f.polls))
	}
}

func errorsAs(err error, re **agent.RetryError) bool {
	r, ok := err.(*agent.RetryError)
	*re = r
	return ok
}

// checkFiles checks the key file (0600, the certificate's) and the
// fullchain file (0644, the served PEM); it returns the key's text.
func checkFiles(t *testing.T, keyPath, fullPath string, full []byte) string {
	t.Helper()
	for p, mode := range map[string]os.FileMode{keyPath: 0o600, fullPath: 0o644} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	got, _ := os.ReadFile(fullPath)
	if !bytes.Equal(got, full) {
		t.Fatalf("fullchain:\n%s", got)
	}
	keyPEM, _ := os.ReadFile(keyPath)
	kb, _ := pem.Decode(keyPEM)
	cb, _ := pem.Decode(full)
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cb.Bytes)
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("the key is not the certificate's")
	}
	return string(keyPEM)
}

// agentKey is an API key of u for the agent's tests: device login,
// devices, certificates and CAs.
func agentKey(t *testing.T, a *app.App, u identity.User) string {
	t.Helper()
	var perms []identity.Permission
	for _, s := range identity.Catalog {
		switch s.ObType {
		case "ForDeviceAuthenticate", "devices", "certificates", "cas":
			perms = append(perms, identity.Permission{ObType: s.ObType, ObID: "*", Actions: s.Actions})
		}
	}
	_, key, err := a.Identity.CreateAPIKey(context.Background(), u.ID, identity.NewAPIKey{Name: "agent", Permissions: perms})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// apiCall sends a request with the API key, decodes the envelope's data
// into into (when not nil) and returns the status.
func apiCall(t *testing.T, base, key, method, path string, body any, into any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if into != nil {
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal(raw, &env); err != nil || json.Unmarshal(env.Data, into) != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
	}
	if resp.StatusCode >= 400 {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// agentCLI runs the agent's commands over one state directory; the
// output of the last command is in out.
type agentCLI struct {
	t     *testing.T
	state string
	out   bytes.Buffer
}

func (c *agentCLI) run(args ...string) error {
	c.out.Reset()
	return run(context.Background(), append(args, "--state", c.state), &c.out, &c.out)
}

func (c *agentCLI) must(args ...string) string {
	c.t.Helper()
	if err := c.run(args...); err != nil {
		c.t.Fatalf("%v: %v\n%s", args, err, c.out.String())
	}
	return c.out.String()
}

// TestAgentExecItems applies exec items from install configs set on the
// local server: they run once per change (not on an idle poll), with
// their env replacing the agent's, an argv cmd as it is, their output
// prefixed in the agent's; a failing one stops the rest and fails the
// poll, unless continue_on_error; run_as another user fails the item; a
// disabled one never runs.
func TestAgentExecItems(t *testing.T) {
	a, srv, u := localServer(t, "exec@example.com")
	key := agentKey(t, a, u)
	cli := &agentCLI{t: t, state: filepath.Join(t.TempDir(), "state")}
	cli.must("login", "--server", srv.URL, "--apikey", key)
	deviceID := agent.New(cli.state, io.Discard).DeviceID()
	dir := t.TempDir()
	marker, argvMarker, never := filepath.Join(dir, "record"), filepath.Join(dir, "argv"), filepath.Join(dir, "never")
	put := func(installs ...map[string]any) {
		t.Helper()
		if code := apiCall(t, srv.URL, key, "PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", u.ID, deviceID),
			map[string]any{"installs": installs}, nil); code != 200 {
			t.Fatalf("put install config: %d", code)
		}
	}
	records := func() []string {
		b, _ := os.ReadFile(marker)
		return strings.Fields(string(b))
	}
	record := map[string]any{"id": "record", "type": "exec", "env": map[string]string{"GREETING": "hi"},
		"cmd": `printf '%s|%s|%s\n' "$GREETING" "${HOME-unset}" "$CERTCTRL_EVENT" >> '` + marker + `'`}
	argv := map[string]any{"id": "argv", "type": "exec",
		"cmd": []string{"/bin/sh", "-c", `echo "argv ran: $0 $1"; echo "$0 $1" >> "$2"`, "zero", "one", argvMarker}}
	off := map[string]any{"id": "off", "type": "exec", "enabled": false, "cmd": "touch '" + never + "'"}

	put(argv, record, off)
	out := cli.must("updates")
	if got := records(); len(got) != 1 || got[0] != "hi|unset|state.resync_required" {
		t.Fatalf("records %q\n%s", got, out)
	}
	if b, _ := os.ReadFile(argvMarker); string(b) != "zero one\n" || !strings.Contains(out, `exec item "argv": argv ran: zero one`) {
		t.Fatalf("argv item: %q\n%s", b, out)
	}
	// Nothing changed: nothing runs.
	if out := cli.must("updates"); len(records()) != 1 || !strings.Contains(out, "no updates") {
		t.Fatalf("idle poll: %q\n%s", records(), out)
	}

	// A failing item stops the rest and fails the poll.
	put(map[string]any{"id": "fails", "type": "exec", "cmd": "echo boom >&2; exit 3"}, record)
	err := cli.run("updates")
	if err == nil || !strings.Contains(err.Error(), `exec item "fails" failed: exit status 3`) ||
		!strings.Contains(cli.out.String(), `exec item "fails": boom`) || len(records()) != 1 {
		t.Fatalf("failing item: %v %q\n%s", err, records(), cli.out.String())
	}
	// With continue_on_error the next item runs; run_as another user
	// fails the item.
	put(map[string]any{"id": "fails", "type": "exec", "cmd": "exit 3", "continue_on_error": true},
		map[string]any{"id": "as-root", "type": "exec", "cmd": "true", "run_as": "certfleet-nobody", "continue_on_error": true},
		record, off)
	out = cli.must("updates")
	if got := records(); len(got) != 2 || got[1] != "hi|unset|install.updated" {
		t.Fatalf("records %q\n%s", got, out)
	}
	for _, want := range []string{`exec item "fails" failed: exit status 3 (continue_on_error)`,
		`exec item "as-root": run_as "certfleet-nobody": the agent runs as`} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %q in:\n%s", want, out)
		}
	}
	if _, err := os.Stat(never); !os.IsNotExist(err) {
		t.Fatalf("the disabled item ran: %v", err)
	}
}

// TestAgentLongPoll polls with --wait: an idle stream holds the poll
// about the wait, a signal arriving meanwhile ends it at once, and run
// --wait picks a signal up the same way.
func TestAgentLongPoll(t *testing.T) {
	a, srv, u := localServer(t, "wait@example.com")
	key := agentKey(t, a, u)
	cli := &agentCLI{t: t, state: filepath.Join(t.TempDir(), "state")}
	cli.must("login", "--server", srv.URL, "--apikey", key)
	deviceID := agent.New(cli.state, io.Discard).DeviceID()
	cli.must("updates") // the first run's resync, and the stream's start
	if err := cli.run("updates", "--wait", "31"); err == nil || !strings.Contains(err.Error(), "--wait must be 0..30") {
		t.Fatalf("--wait 31: %v", err)
	}
	version := 0
	put := func() {
		version++
		path := fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", u.ID, deviceID)
		if code := apiCall(t, srv.URL, key, "PUT", path, map[string]any{"installs": []any{}, "after_update_script": fmt.Sprint("true ", version)}, nil); code != 200 {
			t.Errorf("put install config: %d", code)
		}
	}

	start := time.Now()
	out := cli.must("updates", "--wait", "1")
	if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second || !strings.Contains(out, "no updates") {
		t.Fatalf("idle --wait 1 took %s:\n%s", took, out)
	}

	start = time.Now()
	time.AfterFunc(500*time.Millisecond, put)
	out = cli.must("updates", "--wait", "20")
	if took := time.Since(start); took < 400*time.Millisecond || took > 5*time.Second || !strings.Contains(out, "saved install config version 1") {
		t.Fatalf("--wait 20 with a signal after 500ms took %s:\n%s", took, out)
	}

	// run --wait: the held poll gets the next signal.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lineWriter{lines: make(chan string, 100)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--wait", "20", "--state", cli.state}, w, w) }()
	time.AfterFunc(500*time.Millisecond, put)
	for deadline := time.After(10 * time.Second); ; {
		select {
		case l := <-w.lines:
			if l != "saved install config version 2 (0 items)" {
				continue
			}
		case err := <-done:
			t.Fatalf("run ended: %v", err)
		case <-deadline:
			t.Fatal("run --wait did not pick up the signal")
		}
		break
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAgentImportsCA puts a private CA created on the local server on the
// device: ca.assigned brings its bundle into the state directory, the
// trust directory (then the trust update command runs) and the import_ca
// item's files, and runs the exec item on the CA; the same CA assigned
// again changes nothing; ca.unassigned takes it out of the trust
// directory and the state directory and leaves the installed files.
func TestAgentImportsCA(t *testing.T) {
	a, srv, u := localServer(t, "ca@example.com")
	key := agentKey(t, a, u)
	cli := &agentCLI{t: t, state: filepath.Join(t.TempDir(), "state")}
	cli.must("login", "--server", srv.URL, "--apikey", key)
	deviceID := agent.New(cli.state, io.Discard).DeviceID()

	var ca struct {
		ID               int64  `json:"id"`
		SerialNumber     string `json:"serial_number"`
		CACertificatePEM string `json:"ca_certificate_pem"`
	}
	if code := apiCall(t, srv.URL, key, "POST", fmt.Sprintf("/apiv1/users/%d/cas", u.ID),
		map[string]any{"name": "Office root", "common_name": "Office Root CA"}, &ca); code != 201 || ca.ID == 0 || ca.CACertificatePEM == "" {
		t.Fatalf("create CA: %d %+v", code, ca)
	}
	dir := t.TempDir()
	trustDir, trustLog, execLog := filepath.Join(dir, "trust"), filepath.Join(dir, "trust-updates"), filepath.Join(dir, "ca-exec")
	to := []string{filepath.Join(dir, "pki", "office.pem"), filepath.Join(dir, "pki", "office.der"), filepath.Join(dir, "pki", "office.json")}
	if code := apiCall(t, srv.URL, key, "PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", u.ID, deviceID), map[string]any{"installs": []any{
		map[string]any{"id": "office", "type": "import_ca", "ob_type": "ca", "ob_id": ca.ID, "from": []string{"ca.pem", "ca.der", "meta.json"}, "to": to},
		map[string]any{"id": "on-ca", "type": "exec", "ob_type": "ca", "ob_id": ca.ID, "cmd": `echo "$CERTCTRL_EVENT" >> '` + execLog + `'`},
	}}, nil); code != 200 {
		t.Fatalf("put install config: %d", code)
	}
	flags := []string{"--trust-dir", trustDir, "--trust-update-cmd", "echo updated >> '" + trustLog + "'"}
	updates := func() string { t.Helper(); return cli.must(append([]string{"updates"}, flags...)...) }
	lines := func(path string) []string {
		b, _ := os.ReadFile(path)
		return strings.Fields(string(b))
	}
	trustFile := filepath.Join(trustDir, fmt.Sprintf("certfleet-ca-%d.crt", ca.ID))
	stateCA := filepath.Join(cli.state, "cas", fmt.Sprint(ca.ID), "ca.pem")

	// The first run's resync applies the import_ca item: the CA is not
	// on the device yet (404), nothing is imported.
	out := updates()
	if _, err := os.Stat(trustFile); !os.IsNotExist(err) || !strings.Contains(out, fmt.Sprintf("CA %d: nothing imported (not assigned to this device", ca.ID)) {
		t.Fatalf("before the association (%v):\n%s", err, out)
	}

	// Associated: ca.assigned imports it.
	path := fmt.Sprintf("/apiv1/users/%d/devices/%d/cas", u.ID, deviceID)
	if code := apiCall(t, srv.URL, key, "POST", path, map[string]any{"ca_id": ca.ID}, nil); code != 201 {
		t.Fatalf("associate: %d", code)
	}
	out = updates()
	for _, p := range []string{trustFile, stateCA, to[0]} {
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != ca.CACertificatePEM || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v %v\n%s", p, fi, err, out)
		}
	}
	blk, _ := pem.Decode([]byte(ca.CACertificatePEM))
	if der, _ := os.ReadFile(to[1]); blk == nil || !bytes.Equal(der, blk.Bytes) {
		t.Fatalf("ca.der is not the CA's certificate\n%s", out)
	}
	var meta struct {
		CAID         int64  `json:"ca_id"`
		Name         string `json:"name"`
		SerialNumber string `json:"serial_number"`
		Subject      string `json:"subject"`
	}
	if b, _ := os.ReadFile(to[2]); json.Unmarshal(b, &meta) != nil || meta.CAID != ca.ID || meta.Name != "Office root" ||
		meta.SerialNumber != ca.SerialNumber || !strings.Contains(meta.Subject, "Office Root CA") {
		t.Fatalf("meta.json %+v\n%s", meta, out)
	}
	if got := lines(trustLog); len(got) != 1 {
		t.Fatalf("trust updates %q\n%s", got, out)
	}
	// (The first run ran it too: the config was new.)
	if got := lines(execLog); len(got) != 2 || got[1] != "ca.assigned" {
		t.Fatalf("exec on the CA %q\n%s", got, out)
	}

	// Associated again: the server signals again, nothing changes.
	if code := apiCall(t, srv.URL, key, "POST", path, map[string]any{"ca_id": ca.ID}, nil); code != 200 {
		t.Fatalf("associate again: %d", code)
	}
	out = updates()
	if len(lines(trustLog)) != 1 || len(lines(execLog)) != 2 || !strings.Contains(out, fmt.Sprintf("CA %d at %s is up to date", ca.ID, trustFile)) {
		t.Fatalf("associated again: %q %q\n%s", lines(trustLog), lines(execLog), out)
	}

	// Dissociated: out of the trust and state directories, the installed
	// files stay.
	if code := apiCall(t, srv.URL, key, "DELETE", fmt.Sprintf("%s/%d", path, ca.ID), nil, nil); code != 204 {
		t.Fatalf("dissociate: %d", code)
	}
	out = updates()
	for _, p := range []string{trustFile, filepath.Dir(stateCA)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still there (%v):\n%s", p, err, out)
		}
	}
	for _, p := range to {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("installed file removed: %v\n%s", err, out)
		}
	}
	if got := lines(trustLog); len(got) != 2 {
		t.Fatalf("trust updates after the dissociation %q\n%s", got, out)
	}
	if got := lines(execLog); len(got) != 3 || got[2] != "ca.unassigned" {
		t.Fatalf("exec on the CA after the dissociation %q\n%s", got, out)
	}
	t.Logf("agent output:\n%s", out)
}

// TestAgentUsesDeviceURL: with --device-url the device's own calls go
// to the device-self function's handler alone (the cloud's function URL)
// and nothing of the device's reaches the API server; login and the API
// stay on --server.
func TestAgentUsesDeviceURL(t *testing.T) {
	ctx := context.Background()
	a, _, u := localServer(t, "device-url@example.com")
	var apiSelf, selfCalls atomic.Int64
	counting := func(n *atomic.Int64, only string, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, only) {
				n.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}
	api := httptest.NewServer(counting(&apiSelf, "/apiv1/devices/self/", a.Handler()))
	defer api.Close()
	self := httptest.NewServer(counting(&selfCalls, "/apiv1/devices/self/", a.DeviceSelfHandler()))
	defer self.Close()
	_, key, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "agent", Permissions: []identity.Permission{
		{ObType: "ForDeviceAuthenticate", ObID: "*", Actions: []string{"authenticate"}}}})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"login", "--server", api.URL, "--device-url", "ftp://nope", "--apikey", key, "--state", state}, &out, &errOut); err == nil {
		t.Fatal("login accepted an ftp device URL")
	}
	if err := run(ctx, []string{"login", "--server", api.URL, "--device-url", self.URL + "/", "--apikey", key, "--state", state}, &out, &errOut); err != nil {
		t.Fatalf("login: %v\n%s", err, out.String())
	}
	ag := agent.New(state, io.Discard)
	if err := a.Stream.Signal(ctx, u.ID, ag.DeviceID(), devices.SignalCertUnassigned, map[string]any{"cert_id": 9}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"updates", "--state", state}, &out, &errOut); err != nil {
		t.Fatalf("updates: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "certificate 9 was unassigned") {
		t.Fatalf("updates:\n%s", out.String())
	}
	if selfCalls.Load() < 2 || apiSelf.Load() != 0 {
		t.Fatalf("device calls: %d to the device URL, %d to the API server", selfCalls.Load(), apiSelf.Load())
	}
}
