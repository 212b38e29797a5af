package app_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/certfleet/certfleet/shared/agent"
	"github.com/certfleet/certfleet/shared/config"
)

// TestAgentInstallsIssuedCertificate drives certfleet-agent's logic
// (shared/agent) against the local server issuing with Pebble: login with
// an API key, an install config copying a certificate with an
// after_update_script, the certificate assigned before it is issued
// (WRAP_PENDING: nothing installed), issued (installed, the key decrypted
// with the device's key and the script run once), then renewed (the files
// replaced, the script run again).
func TestAgentInstallsIssuedCertificate(t *testing.T) {
	s := startLiveServer(t, config.Local)
	defer s.stop()
	ctx := context.Background()

	cert := struct{ ID int64 }{s.createCertificate(s.activeAccount(), "agent.e2e.test", "")}
	issue := func() { s.issue(cert.ID) }

	// Login with the API key, through the agent's Go API.
	stateDir := filepath.Join(t.TempDir(), "state")
	var out bytes.Buffer
	ag := agent.New(stateDir, &out)
	ag.Version = "0.1.0-test"
	if err := ag.Login(ctx, agent.LoginOptions{Server: s.base, APIKey: s.token}); err != nil {
		t.Fatal(err)
	}
	agentMode(t, stateDir, 0o700)
	agentMode(t, filepath.Join(stateDir, "dev_sk.bin"), 0o600)
	agentMode(t, filepath.Join(stateDir, "session.json"), 0o600)
	deviceID := ag.DeviceID()
	if deviceID == 0 || len(ag.DevicePublicID()) != 36 {
		t.Fatalf("device %d %q\n%s", deviceID, ag.DevicePublicID(), out.String())
	}

	// The install config copies the certificate's files; the script
	// appends its $1 to a marker file.
	dst := t.TempDir()
	marker := filepath.Join(dst, "marker")
	files := []string{"private.key", "certificate.pem", "chain.pem", "fullchain.pem"}
	var to []string
	for _, f := range files {
		to = append(to, filepath.Join(dst, "ssl", f))
	}
	put, _ := json.Marshal(map[string]any{
		"installs":            []map[string]any{{"id": "web", "type": "copy", "ob_type": "cert", "ob_id": cert.ID, "from": files, "to": to}},
		"after_update_script": "@@@BEGIN posix.sh\necho \"$1\" >> '" + marker + "'\n@@@END\n@@@BEGIN windows.cmd\necho wrong\n@@@END\n",
	})
	if code := s.call("PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", s.userID, deviceID), string(put), nil); code != 200 {
		t.Fatalf("put install config: %d", code)
	}
	// Assigned before it is issued: the agent sees cert.updated but the
	// key is not wrapped yet, so nothing is installed.
	if code := s.call("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", deviceID), fmt.Sprintf(`{"certificate_id":%d}`, cert.ID), nil); code != 201 {
		t.Fatalf("assign: %d", code)
	}
	if _, err := ag.Updates(ctx); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if _, err := os.Stat(to[0]); !os.IsNotExist(err) || !strings.Contains(out.String(), "saved install config version 1") ||
		!strings.Contains(out.String(), "not ready yet") {
		t.Fatalf("before the issue (%v):\n%s", err, out.String())
	}
	if info, ok, err := s.app.InstallConfigs.AgentVersion(ctx, s.userID, deviceID); err != nil || !ok || info.Agent != agent.Name || info.Version != "0.1.0-test" {
		t.Fatalf("version notify: %+v %v %v", info, ok, err)
	}

	// Issued: the rewrap hook signals cert.updated; the agent installs.
	issue()
	pollUntil := func(what string, done func() bool) {
		t.Helper()
		s.waitFor(what, func() bool {
			if _, err := ag.Updates(ctx); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			return done()
		})
	}
	pollUntil("the certificate to be installed", func() bool { _, err := os.Stat(to[0]); return err == nil })
	firstKey := agentCheckInstalled(t, ag, s.base, cert.ID, to)
	if got := agentRead(t, marker); got != "cert.updated\n" {
		t.Fatalf("marker %q\n%s", got, out.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("installed certificate %d to %s", cert.ID, to[0])) {
		t.Fatalf("output:\n%s", out.String())
	}
	// Nothing new: no updates, the script does not run again.
	out.Reset()
	if _, err := ag.Updates(ctx); err != nil || !strings.Contains(out.String(), "no updates") {
		t.Fatalf("idle poll: %v\n%s", err, out.String())
	}

	// Renewed: the files are replaced and the script runs again.
	issue()
	pollUntil("the renewal to be installed", func() bool { return agentRead(t, to[0]) != firstKey })
	if agentCheckInstalled(t, ag, s.base, cert.ID, to) == firstKey {
		t.Fatal("the renewal kept the key")
	}
	if got := agentRead(t, marker); got != "cert.updated\ncert.updated\n" {
		t.Fatalf("marker after renewal %q\n%s", got, out.String())
	}
	t.Logf("agent output:\n%s", out.String())
}

// agentCheckInstalled checks the installed files: the key is 0600, PKCS
// #8 and the certificate's; fullchain is certificate + chain; the
// deploy materials open with this device's key and with no other. It
// returns the key file's text.
func agentCheckInstalled(t *testing.T, ag *agent.Agent, base string, certID int64, to []string) string {
	t.Helper()
	agentMode(t, to[0], 0o600)
	for _, p := range to[1:] {
		agentMode(t, p, 0o644)
	}
	keyPEM, certPEM, chainPEM, full := agentRead(t, to[0]), agentRead(t, to[1]), agentRead(t, to[2]), agentRead(t, to[3])
	kb, _ := pem.Decode([]byte(keyPEM))
	cb, _ := pem.Decode([]byte(certPEM))
	if kb == nil || kb.Type != "PRIVATE KEY" || cb == nil || chainPEM == "" || full != certPEM+chainPEM {
		t.Fatalf("installed files:\n%s\n%s\n%s", keyPEM, certPEM, full)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("the installed key is not the certificate's")
	}

	// The wrapped data key opens with the device's key only.
	var sess struct {
		AccessToken string `json:"access_token"`
	}
	raw, err := os.ReadFile(filepath.Join(ag.StateDir, "session.json"))
	if err != nil || json.Unmarshal(raw, &sess) != nil {
		t.Fatalf("session.json: %v", err)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/apiv1/devices/self/certificates/%d/deploy-materials", base, certID), nil)
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m struct {
		Data struct {
			EncDataKey string `json:"enc_data_key_b64"`
		}
	}
	json.Unmarshal(body, &m)
	enc, err := base64.StdEncoding.DecodeString(m.Data.EncDataKey)
	if resp.StatusCode != 200 || err != nil || len(enc) == 0 {
		t.Fatalf("deploy-materials: %d %s", resp.StatusCode, body)
	}
	pk, sk, err := ag.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := box.OpenAnonymous(nil, enc, pk, sk); !ok || len(k) != 32 {
		t.Fatal("the data key does not open with the device's key")
	}
	otherPK, otherSK, _ := box.GenerateKey(rand.Reader)
	if _, ok := box.OpenAnonymous(nil, enc, otherPK, otherSK); ok {
		t.Fatal("the data key opens with another key")
	}
	return keyPEM
}

func agentMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Fatalf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func agentRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
