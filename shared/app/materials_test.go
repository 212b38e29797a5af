package app_test

import (
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
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// materialsSignals is a devices.Signaler that records what it is sent.
type materialsSignals struct {
	mu  sync.Mutex
	got []map[string]any // type, device and the ref's fields
}

func (s *materialsSignals) Signal(_ context.Context, _, deviceID int64, typ string, ref map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]any{"type": typ, "device": deviceID}
	for k, v := range ref {
		m[k] = v
	}
	s.got = append(s.got, m)
	return nil
}

func (s *materialsSignals) take() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// materialsAgent is a device registered over the API (its API-key
// registration) with its key pair and access token.
type materialsAgent struct {
	id       int64
	publicID string
	pk, sk   *[32]byte
	token    string
}

// TestMaterialsScenarios runs the device protocol's scenarios 13-17 (§7)
// against the local server issuing with Pebble, the assignment and
// device certificate routes served beside it with a recording signaler.
func TestMaterialsScenarios(t *testing.T) {
	s := startLiveServer(t, config.Local)
	defer s.stop()
	a := s.app
	sig := &materialsSignals{}
	// The routes as app.go mounts them (devices group: user routes;
	// devices/self group: the device's), on a server of their own.
	routes := append(a.DeviceCertUserRoutes(sig), a.DeviceCertSelfRoutes(sig, httpapi.NewCachingVerifier(a.DeviceTokens, 100, nil))...)
	mat := httptest.NewServer(httpapi.Wrap(httpapi.NewRouter(httpapi.Group{Name: "materials", Routes: routes}), a.Log))
	defer mat.Close()
	rewrap := a.RewrapOnIssued(sig) // the issuance hook
	ctx := context.Background()

	// matCall sends to the materials server with the API key, or with a
	// device's token; it returns the status and the raw body.
	matCall := func(method, path, body, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, mat.URL+path, strings.NewReader(body))
		if token == "" {
			token = s.token
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	data := func(body string, into any) {
		t.Helper()
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal([]byte(body), &env); err != nil || json.Unmarshal(env.Data, into) != nil {
			t.Fatalf("body %s", body)
		}
	}

	acct := s.activeAccount()
	create := func(name, extra string) int64 { return s.createCertificate(acct, name, extra) }
	issue := s.issue
	register := func(publicID string) materialsAgent {
		t.Helper()
		pk, sk, _ := box.GenerateKey(rand.Reader)
		var reg struct {
			Device  struct{ ID int64 }
			Session struct {
				AccessToken string `json:"access_token"`
			}
		}
		body := fmt.Sprintf(`{"device_public_id":%q,"dev_pk":%q,"name":"web"}`, publicID, base64.StdEncoding.EncodeToString(pk[:]))
		if code := s.call("POST", "/apiv1/me/devices", body, &reg); code/100 != 2 || reg.Session.AccessToken == "" {
			t.Fatalf("register device: %d", code)
		}
		return materialsAgent{id: reg.Device.ID, publicID: publicID, pk: pk, sk: sk, token: reg.Session.AccessToken}
	}
	self := func(certID int64) string { return fmt.Sprintf("/apiv1/devices/self/certificates/%d", certID) }
	// leafKey is the public key of the detail's certificate.
	leafKey := func(d materialsAgent, certID int64) crypto.PublicKey {
		t.Helper()
		code, body := matCall("GET", self(certID), "", d.token)
		if code != 200 || strings.Contains(body, "PRIVATE KEY") {
			t.Fatalf("detail: %d %s", code, body)
		}
		var detail struct {
			ID                  int64
			DomainName          string `json:"domain_name"`
			CertPEM             string `json:"certificate_pem"`
			ChainPEM            string `json:"chain_pem"`
			FullchainPEM        string `json:"fullchain_pem"`
			KeyDistPolicy       string `json:"key_dist_policy"`
			ServerDecryptExport *bool  `json:"server_decrypt_export"`
		}
		data(body, &detail)
		block, _ := pem.Decode([]byte(detail.CertPEM))
		if detail.ID != certID || detail.DomainName == "" || block == nil || detail.ChainPEM == "" ||
			detail.FullchainPEM != detail.CertPEM+detail.ChainPEM || detail.KeyDistPolicy == "" || detail.ServerDecryptExport == nil {
			t.Fatalf("detail %s", body)
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return leaf.PublicKey
	}
	// openKey fetches the AEAD materials and decrypts them with the
	// device's secret key as the agent does; the key must be the
	// certificate's.
	openKey := func(d materialsAgent, certID int64) []byte {
		t.Helper()
		want := leafKey(d, certID)
		code, body := matCall("GET", self(certID)+"/deploy-materials", "", d.token)
		if code != 200 {
			t.Fatalf("deploy-materials: %d %s", code, body)
		}
		var m struct {
			Scheme     string `json:"enc_scheme"`
			KeyFP      []byte `json:"device_keyfp_b64"`
			EncDataKey []byte `json:"enc_data_key_b64"`
			EncPrivKey []byte `json:"enc_privkey_b64"`
			Nonce      []byte `json:"privkey_nonce_b64"`
			Tag        []byte `json:"privkey_tag_b64"`
		}
		data(body, &m)
		if m.Scheme != "aes256gcm" || string(m.KeyFP) != string(devices.KeyFingerprint(d.pk[:])) {
			t.Fatalf("materials %s", body)
		}
		k, ok := box.OpenAnonymous(nil, m.EncDataKey, d.pk, d.sk)
		if !ok || len(k) != 32 {
			t.Fatal("enc_data_key does not open with the device's key")
		}
		der, err := devices.OpenMaterials(devices.Materials{EncDataKey: m.EncDataKey, EncPrivKey: m.EncPrivKey, Nonce: m.Nonce, Tag: m.Tag}, d.pk, d.sk)
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil || !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
			t.Fatalf("the decrypted key is not the certificate's (%v)", err)
		}
		return der
	}
	wantSignal := func(typ string, device, certID int64, wrapReady any) {
		t.Helper()
		sigs := sig.take()
		if len(sigs) != 1 || sigs[0]["type"] != typ || sigs[0]["device"] != device || sigs[0]["cert_id"] != certID ||
			(wrapReady != nil && sigs[0]["wrap_ready"] != wrapReady) {
			t.Fatalf("signals %v, want %s to %d", sigs, typ, device)
		}
	}

	one, two := register("11111111-0000-4000-8000-000000000001"), register("22222222-0000-4000-8000-000000000002")
	hybrid := create("hybrid.materials.test", "")

	// 14: assigned before it is issued: pending, then ready after the
	// issue's hook.
	code, body := matCall("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", one.id), fmt.Sprintf(`{"certificate_id":%d}`, hybrid), "")
	if code != 201 {
		t.Fatalf("assign: %d %s", code, body)
	}
	wantSignal("cert.updated", one.id, hybrid, false)
	if code, body := matCall("GET", self(hybrid)+"/deploy-materials", "", one.token); code != 409 || !strings.Contains(body, "WRAP_PENDING") {
		t.Fatalf("pending: %d %s", code, body)
	}
	first := issue(hybrid)
	rewrap(ctx, s.userID, hybrid, first)
	wantSignal("cert.updated", one.id, hybrid, true)
	firstKey := openKey(one, hybrid)

	// 13: assigning an issued certificate wraps it at once.
	if code, body := matCall("POST", fmt.Sprintf("/apiv1/users/%d/devices/%d/certificates", s.userID, two.id), fmt.Sprintf(`{"certificate_id":%d}`, hybrid), ""); code != 201 {
		t.Fatalf("assign: %d %s", code, body)
	}
	wantSignal("cert.updated", two.id, hybrid, true)
	if string(openKey(two, hybrid)) != string(firstKey) {
		t.Fatal("two devices got different keys")
	}
	// The user's view of one assignment and of what the device gets.
	one2 := fmt.Sprintf("/apiv1/me/devices/%d/certificates/%d", two.id, hybrid)
	if code, body := matCall("GET", one2, "", ""); code != 200 || !strings.Contains(body, `"wrap_ready":true`) {
		t.Fatalf("one assignment: %d %s", code, body)
	}
	if code, body := matCall("GET", one2+"/bundle", "", ""); code != 200 || !strings.Contains(body, `"fullchain_pem":"-----BEGIN CERTIFICATE`) ||
		strings.Contains(body, "PRIVATE KEY") {
		t.Fatalf("bundle: %d %s", code, body)
	}
	if code, _ := matCall("GET", fmt.Sprintf("/apiv1/me/devices/%d/certificates/%d/bundle", two.id, hybrid+1000), "", ""); code != 404 {
		t.Fatalf("bundle of a certificate not on the device: %d", code)
	}

	// 16: a renewal's new key reaches both devices.
	second := issue(hybrid)
	rewrap(ctx, s.userID, hybrid, second)
	if sigs := sig.take(); len(sigs) != 2 || sigs[0]["wrap_ready"] != true || sigs[1]["wrap_ready"] != true {
		t.Fatalf("signals after renewal %v", sigs)
	}
	renewed := openKey(one, hybrid)
	if string(renewed) == string(firstKey) || string(openKey(two, hybrid)) != string(renewed) {
		t.Fatal("the renewal's key did not reach both devices")
	}

	// 15: MASTER_ONLY with server_decrypt_export is plaintext (assigned by
	// the §4.4 automation); without it, 403 EXPORT_FORBIDDEN.
	master := create("master.materials.test", `,"key_dist_policy":"MASTER_ONLY","server_decrypt_export":true`)
	issue(master)
	if code, body := matCall("POST", "/apiv1/me/certificate-assign", fmt.Sprintf(`{"device_public_id":%q,"certificate_id":%d}`, one.publicID, master), ""); code != 200 {
		t.Fatalf("certificate-assign: %d %s", code, body)
	}
	wantSignal("cert.updated", one.id, master, false)
	want := leafKey(one, master)
	code, body = matCall("GET", self(master)+"/deploy-materials", "", one.token)
	var plain struct {
		Scheme string `json:"enc_scheme"`
		DER    []byte `json:"private_key_der_b64"`
		Cert   string `json:"certificate_pem"`
	}
	data(body, &plain)
	key, err := x509.ParsePKCS8PrivateKey(plain.DER)
	if code != 200 || plain.Scheme != "plaintext" || err != nil || !strings.HasPrefix(plain.Cert, "-----BEGIN CERTIFICATE-----") ||
		!key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
		t.Fatalf("plaintext materials: %d (%v)", code, err)
	}
	if code := s.call("PUT", fmt.Sprintf("/apiv1/me/certificates/%d", master), `{"server_decrypt_export":false}`, nil); code != 200 {
		t.Fatalf("turn export off: %d", code)
	}
	if code, body := matCall("GET", self(master)+"/deploy-materials", "", one.token); code != 403 || !strings.Contains(body, `"key":"EXPORT_FORBIDDEN"`) {
		t.Fatalf("without server_decrypt_export: %d %s", code, body)
	}
	// The policy change reaches the device: the worker rewraps (none for
	// MASTER_ONLY) and signals cert.updated through the live stream.
	s.waitFor("cert.updated after the policy change", func() bool {
		p := updatesGet(t, s.base, "?limit=100", one.token, "")
		for _, sg := range p.Signals() {
			if sg.Type == "cert.updated" && sg.Ref["cert_id"] == float64(master) && sg.Ref["wrap_ready"] == false {
				return true
			}
		}
		return false
	})

	// 17: unassigning signals cert.unassigned; detail and materials 404.
	if code, body := matCall("DELETE", fmt.Sprintf("/apiv1/me/devices/%d/certificates/%d", two.id, hybrid), "", ""); code != 204 {
		t.Fatalf("unassign: %d %s", code, body)
	}
	wantSignal("cert.unassigned", two.id, hybrid, nil)
	for _, p := range []string{self(hybrid), self(hybrid) + "/deploy-materials"} {
		if code, body := matCall("GET", p, "", two.token); code != 404 {
			t.Fatalf("%s after unassign: %d %s", p, code, body)
		}
	}
	// The other device keeps it; a device reads nothing not assigned to it.
	openKey(one, hybrid)
	if code, _ := matCall("GET", self(master), "", two.token); code != 404 {
		t.Fatalf("device two reads device one's certificate: %d", code)
	}
	code, body = matCall("GET", fmt.Sprintf("/apiv1/me/devices/%d/certificates", one.id), "", "")
	var list []struct {
		CertificateID int64 `json:"certificate_id"`
	}
	data(body, &list)
	if code != 200 || len(list) != 2 || list[0].CertificateID != hybrid || list[1].CertificateID != master {
		t.Fatalf("list: %d %s", code, body)
	}
}
