package app_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certfleet/certfleet/shared/agent"
	"github.com/certfleet/certfleet/shared/config"
)

// TestAgentMaterializesIssuedCertificate installs a Pebble-issued
// certificate's bundle.pfx and meta.json with exec items beside the copy:
// the exec items run once per change (the config, the certificate) with
// their env and the bundle's password, a slow one is killed at its
// timeout_ms and, with continue_on_error, the next still runs; a disabled
// one never runs (and the server refuses one on the certificate). The
// password stays while the certificate does, and a renewal brings a new
// one.
func TestAgentMaterializesIssuedCertificate(t *testing.T) {
	s := startLiveServer(t, config.Local)
	defer s.stop()
	ctx := context.Background()
	certID := s.createCertificate(s.activeAccount(), "pfx.e2e.test", "")
	issue := func() { s.issue(certID) }
	issue()

	stateDir := filepath.Join(t.TempDir(), "state")
	var out bytes.Buffer
	ag := agent.New(stateDir, &out)
	if err := ag.Login(ctx, agent.LoginOptions{Server: s.base, APIKey: s.token}); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	files := []string{"private.key", "certificate.pem", "bundle.pfx", "meta.json"}
	var to []string
	for _, f := range files {
		to = append(to, filepath.Join(dst, "ssl", f))
	}
	marker, never, pwFile := filepath.Join(dst, "exec"), filepath.Join(dst, "never"), filepath.Join(dst, "script-password")
	installs := []map[string]any{
		{"id": "web", "type": "copy", "ob_type": "cert", "ob_id": certID, "from": files, "to": to},
		{"id": "slow", "type": "exec", "cmd": []string{"/bin/sleep", "5"}, "timeout_ms": 300, "continue_on_error": true},
		{"id": "record", "type": "exec", "env": map[string]string{"GREETING": "hi"},
			"cmd": `printf '%s|%s|%s|%s\n' "$GREETING" "${HOME-unset}" "$CERTCTRL_EVENT" "$CERTCTRL_PFX_PASSWORD" >> '` + marker + `'`},
	}
	putConfig := func() int {
		t.Helper()
		put, _ := json.Marshal(map[string]any{"installs": installs,
			"after_update_script": `printf '%s\n' "$CERTCTRL_PFX_PASSWORD" > '` + pwFile + `'`})
		return s.call("PUT", fmt.Sprintf("/apiv1/users/%d/devices/%d/install-config", s.userID, ag.DeviceID()), string(put), nil)
	}
	// The server refuses an exec item on a certificate (the agent would
	// skip it: TestExecItemOnCertificateNeverRuns).
	installs = append(installs, map[string]any{"id": "cert-hook", "type": "exec", "ob_type": "cert", "ob_id": certID, "cmd": "touch '" + never + "'"})
	if code := putConfig(); code != 400 {
		t.Fatalf("put an exec item on a certificate: %d", code)
	}
	installs = installs[:len(installs)-1]
	if code := putConfig(); code != 200 {
		t.Fatalf("put install config: %d", code)
	}
	records := func() []string {
		b, _ := os.ReadFile(marker)
		return strings.Fields(string(b))
	}
	updates := func() {
		t.Helper()
		if _, err := ag.Updates(ctx); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
	}

	// The first run applies the config: the certificate is not assigned
	// yet, the exec items run once (the slow one killed at 300 ms).
	start := time.Now()
	updates()
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("the first run took %s: the slow exec item was not killed", took)
	}
	if got := records(); len(got) != 1 || got[0] != "hi|unset|state.resync_required|" {
		t.Fatalf("exec records %q\n%s", got, out.String())
	}
	for _, want := range []string{`exec item "slow" timed out after 300ms (continue_on_error)`, `ran exec item "record"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}

	// Assigned: installed; the exec items run once more, with the
	// bundle's password, as does after_update_script.
	if code := s.call("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", ag.DeviceID()), fmt.Sprintf(`{"certificate_id":%d}`, certID), nil); code != 201 {
		t.Fatalf("assign: %d", code)
	}
	s.waitFor("the certificate to be installed", func() bool {
		updates()
		_, err := os.Stat(to[2])
		return err == nil
	})
	password := checkAgentBundle(t, stateDir, certID, to)
	if got := records(); len(got) != 2 || got[1] != "hi|unset|cert.updated|"+password {
		t.Fatalf("exec records %q (password %s)\n%s", got, password, out.String())
	}
	if b, _ := os.ReadFile(pwFile); string(b) != password+"\n" {
		t.Fatalf("after_update_script saw password %q, want %q", b, password)
	}
	checkAgentMeta(t, certID, "pfx.e2e.test", to)

	// Nothing new: no exec. A new config version re-applies the same
	// certificate: the bundle and its password stay, the exec items run.
	out.Reset()
	updates()
	if got := records(); len(got) != 2 {
		t.Fatalf("an idle poll ran the exec items: %q\n%s", got, out.String())
	}
	pfx, _ := os.ReadFile(to[2])
	installs = append(installs, map[string]any{"id": "off", "type": "exec", "enabled": false, "cmd": "touch '" + never + "'"})
	if code := putConfig(); code != 200 {
		t.Fatalf("put install config: %d", code)
	}
	out.Reset()
	updates()
	if got := records(); len(got) != 3 || got[2] != "hi|unset|install.updated|"+password {
		t.Fatalf("exec records after a config change %q\n%s", got, out.String())
	}
	if again, _ := os.ReadFile(to[2]); !bytes.Equal(again, pfx) || !strings.Contains(out.String(), "bundle.pfx at "+to[2]+" is up to date") {
		t.Fatalf("bundle.pfx was rewritten for the same certificate\n%s", out.String())
	}
	if _, err := os.Stat(never); !os.IsNotExist(err) {
		t.Fatalf("a disabled exec item ran: %v", err)
	}

	// Renewed: a new key, a new bundle with a new password.
	issue()
	firstKey, _ := os.ReadFile(to[0])
	s.waitFor("the renewal to be installed", func() bool {
		updates()
		key, _ := os.ReadFile(to[0])
		return !bytes.Equal(key, firstKey)
	})
	renewed := checkAgentBundle(t, stateDir, certID, to)
	if renewed == password {
		t.Fatal("the renewal kept the bundle.pfx password")
	}
	if got := records(); len(got) != 4 || got[3] != "hi|unset|cert.updated|"+renewed {
		t.Fatalf("exec records after the renewal %q\n%s", got, out.String())
	}
	checkAgentMeta(t, certID, "pfx.e2e.test", to)
	t.Logf("agent output:\n%s", out.String())
}

// checkAgentBundle checks bundle.pfx (0600) against private.key and
// certificate.pem: it decodes with the password kept in the state
// directory and holds the key, the leaf and its chain. It returns the
// password.
func checkAgentBundle(t *testing.T, stateDir string, certID int64, to []string) string {
	t.Helper()
	var st struct{ Password string }
	raw, err := os.ReadFile(filepath.Join(stateDir, "certs", fmt.Sprint(certID), "pfx.json"))
	if err != nil || json.Unmarshal(raw, &st) != nil || st.Password == "" {
		t.Fatalf("pfx.json: %v %s", err, raw)
	}
	if fi, err := os.Stat(filepath.Join(stateDir, "certs", fmt.Sprint(certID), "pfx.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pfx.json mode: %v %v", fi, err)
	}
	if fi, err := os.Stat(to[2]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle.pfx mode: %v %v", fi, err)
	}
	pfx, _ := os.ReadFile(to[2])
	if _, _, _, err := pkcs12.DecodeChain(pfx, st.Password+"x"); err == nil {
		t.Fatal("bundle.pfx decodes with a wrong password")
	}
	key, leaf, chain, err := pkcs12.DecodeChain(pfx, st.Password)
	if err != nil {
		t.Fatalf("bundle.pfx: %v", err)
	}
	certPEM, _ := os.ReadFile(to[1])
	cb, _ := pem.Decode(certPEM)
	if cb == nil || !bytes.Equal(cb.Bytes, leaf.Raw) || len(chain) == 0 || chain[0].Subject.String() != leaf.Issuer.String() {
		t.Fatalf("bundle.pfx holds leaf %s with chain %d, not certificate.pem", leaf.Subject, len(chain))
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("bundle.pfx's key is not its certificate's")
	}
	keyPEM, _ := os.ReadFile(to[0])
	kb, _ := pem.Decode(keyPEM)
	installed, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil || !installed.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatalf("private.key is not bundle.pfx's key: %v", err)
	}
	return st.Password
}

// checkAgentMeta checks meta.json against certificate.pem.
func checkAgentMeta(t *testing.T, certID int64, domain string, to []string) {
	t.Helper()
	raw, _ := os.ReadFile(to[3])
	var m struct {
		CertID            int64     `json:"cert_id"`
		DomainName        string    `json:"domain_name"`
		Serial            string    `json:"serial"`
		NotBefore         time.Time `json:"not_before"`
		NotAfter          time.Time `json:"not_after"`
		SHA256Fingerprint string    `json:"sha256_fingerprint"`
		SANs              []string  `json:"sans"`
		Issuer            string    `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("meta.json: %v\n%s", err, raw)
	}
	certPEM, _ := os.ReadFile(to[1])
	cb, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(leaf.Raw)
	if m.CertID != certID || m.DomainName != domain || m.Serial != hex.EncodeToString(leaf.SerialNumber.Bytes()) ||
		!m.NotBefore.Equal(leaf.NotBefore) || !m.NotAfter.Equal(leaf.NotAfter) || m.SHA256Fingerprint != hex.EncodeToString(fp[:]) ||
		len(m.SANs) != 1 || m.SANs[0] != domain || m.Issuer != leaf.Issuer.String() {
		t.Fatalf("meta.json:\n%s\nleaf serial %x, issuer %s", raw, leaf.SerialNumber, leaf.Issuer)
	}
	if bytes.Contains(raw, []byte("PRIVATE")) || bytes.Contains(raw, []byte("password")) {
		t.Fatalf("meta.json holds secrets:\n%s", raw)
	}
}
