package certctrl_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// deviceCertSignals records the signals sent to devices.
type deviceCertSignals struct {
	mu  sync.Mutex
	got []deviceCertSignal
}

type deviceCertSignal struct {
	DeviceID int64
	Type     string
	Ref      map[string]any
}

func (s *deviceCertSignals) Signal(_ context.Context, _, deviceID int64, typ string, ref map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, deviceCertSignal{deviceID, typ, ref})
	return nil
}

func (s *deviceCertSignals) take() []deviceCertSignal {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// deviceCertLookup and deviceCertIssueKeys are app's adapters (shared/app/materials.go).
type deviceCertLookup struct{ svc *certs.Service }

func (c deviceCertLookup) CertInfo(ctx context.Context, userID, certID int64) (devices.CertInfo, error) {
	cert, err := c.svc.Get(ctx, userID, certID)
	return devices.CertInfo{ID: cert.ID, Policy: cert.Policy, ServerDecryptExport: cert.ServerDecryptExport, IssueID: cert.IssueID}, err
}

type deviceCertIssueKeys struct {
	iss    *issuance.Service
	sealer keys.Sealer
}

func (k deviceCertIssueKeys) IssueKey(ctx context.Context, userID, certID, issueID int64) ([]byte, error) {
	sealed, encCtx, err := k.iss.SealedKey(ctx, userID, certID, issueID)
	if err != nil || len(sealed) == 0 {
		return nil, err
	}
	return k.sealer.Open(ctx, sealed, encCtx)
}

// materialsEnv serves the auth, ACME account, certificate, issue, device
// and device certificate routes over real parts, with a worker issuing
// against Pebble.
type materialsEnv struct {
	*env
	p      *testenv.Parts
	reg    *devices.Service
	as     *devices.Assignments
	tokens *devicetoken.Service
	sig    *deviceCertSignals
}

func newMaterialsEnv(t *testing.T) *materialsEnv {
	t.Helper()
	is := startIssuing(t)
	p, accts, certSvc, iss := is.p, is.accts, is.certs, is.iss

	ids := p.Identity()
	tokens := devicetoken.New(p.Store, p.Sealer, devicetoken.Config{})
	reg := devices.New(p.Store, tokens, devices.Config{Log: p.Log})
	sig := &deviceCertSignals{}
	as := devices.NewAssignments(reg, deviceCertLookup{certSvc}, deviceCertIssueKeys{iss, p.Sealer}, p.Sealer, sig, devices.AssignConfig{})
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	deps := certctrl.DeviceCertDeps{Assignments: as, Devices: reg, Certs: certSvc, Export: iss, Guard: guard, Verifier: tokens}
	// The device routes joined as the devices group joins them: the
	// by-public-id route must coexist with ours.
	devs := certctrl.DevicesGroup(certctrl.DeviceDeps{Devices: reg, Grant: devices.NewGrant(p.Store, devices.GrantConfig{}), Tokens: tokens, Guard: guard})
	devs.Routes = certctrl.MergeDeviceGets(append(devs.Routes, certctrl.DeviceCertRoutes(deps)...))
	h := httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(accts, guard),
		certctrl.CertificatesGroup(certSvc, guard),
		certctrl.IssuesGroup(iss, guard),
		devs), p.Log)
	e := &env{Client: testenv.Client{T: t, Handler: h}, t: t, ids: ids, clock: p.Clock, outbox: p.OutboxDir}
	return &materialsEnv{env: e, p: p, reg: reg, as: as, tokens: tokens, sig: sig}
}

// deviceCertAgent is a registered device with its key pair and access token.
type deviceCertAgent struct {
	dev    devices.Device
	pk, sk *[32]byte
	token  string
}

func (e *materialsEnv) device(userID int64, publicID string) deviceCertAgent {
	e.t.Helper()
	pk, sk, err := box.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	d, _, err := e.reg.Register(context.Background(), userID, devices.Registration{PublicID: publicID,
		PublicKeyB64: base64.StdEncoding.EncodeToString(pk[:])})
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.tokens.Issue(context.Background(), d.ID, userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return deviceCertAgent{dev: d, pk: pk, sk: sk, token: tok.AccessToken}
}

// get sends a GET with the device's access token.
func (e *materialsEnv) get(path, token string) reply {
	e.t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.Handler.ServeHTTP(rec, req)
	r := reply{Status: rec.Code, Header: rec.Header(), Body: rec.Body.String()}
	var env struct {
		Data  json.RawMessage
		Error *httpapi.ErrorBody
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		e.t.Fatalf("GET %s: not JSON: %s", path, rec.Body)
	}
	r.Data, r.Error = env.Data, env.Error
	return r
}

// waitIssued starts an issue of the certificate and waits for it.
func (e *materialsEnv) waitIssued(session string, certID int64) {
	e.t.Helper()
	e.want(e.do("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", session), 202, "")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		list := decode[[]issueView](e.t, e.do("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", session))
		if len(list) > 0 && list[0].Step == issuance.StepDone {
			if list[0].Status != issuance.StatusIssued {
				e.t.Fatalf("issue of %d ended %s", certID, list[0].Status)
			}
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("certificate %d not issued in 30 s", certID)
		}
	}
}

type deviceCertDetail struct {
	ID                  int64  `json:"id"`
	DomainName          string `json:"domain_name"`
	CertificatePEM      string `json:"certificate_pem"`
	ChainPEM            string `json:"chain_pem"`
	FullchainPEM        string `json:"fullchain_pem"`
	KeyDistPolicy       string `json:"key_dist_policy"`
	ServerDecryptExport bool   `json:"server_decrypt_export"`
}

// openDeviceCertAEAD decrypts an AEAD deploy-materials payload as the agent does
// and checks it is leaf's key.
func openDeviceCertAEAD(t *testing.T, r reply, d deviceCertAgent, leaf *x509.Certificate) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m["enc_scheme"] != "aes256gcm" || m["wrap_alg"] != "x25519" {
		t.Fatalf("materials %s", r.Body)
	}
	field := func(name string, size int) []byte {
		s, _ := m[name].(string)
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || (size > 0 && len(b) != size) {
			t.Fatalf("%s: %d bytes, %v", name, len(b), err)
		}
		return b
	}
	fp := field("device_keyfp_b64", 32)
	if string(fp) != string(devices.KeyFingerprint(d.pk[:])) {
		t.Fatal("device_keyfp_b64 is not the device key's fingerprint")
	}
	der, err := devices.OpenMaterials(devices.Materials{EncDataKey: field("enc_data_key_b64", 80), EncPrivKey: field("enc_privkey_b64", 0),
		Nonce: field("privkey_nonce_b64", 12), Tag: field("privkey_tag_b64", 16)}, d.pk, d.sk)
	if err != nil {
		t.Fatal(err)
	}
	sameDeviceCertKey(t, der, leaf)
}

func sameDeviceCertKey(t *testing.T, der []byte, leaf *x509.Certificate) {
	t.Helper()
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("not PKCS #8: %v", err)
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("the key is not the certificate's")
	}
}

// TestDeviceCertificatesOverHTTP runs the device protocol's scenarios
// 13, 14, 15 and 17 over the routes, with certificates Pebble issues,
// and the isolation between users and devices.
func TestDeviceCertificatesOverHTTP(t *testing.T) {
	e := newMaterialsEnv(t)
	session, uid := e.registerActive("owner@example.com")
	otherSession, otherUID := e.registerActive("other@example.com")
	r := e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"ops@example.com"}`, session)
	e.want(r, 201, "")
	acct := decode[acctView](t, r)
	for deadline := time.Now().Add(30 * time.Second); decode[acctView](t, e.do("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", acct.ID), "", session)).Status != "active"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ACME account did not register")
		}
	}
	create := func(name, extra string) int64 {
		r := e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":%q,"acct_id":%d%s}`, name, acct.ID, extra), session)
		e.want(r, 201, "")
		return decode[certView](t, r).ID
	}
	hybrid := create("hybrid.certfleet.test", "")
	master := create("master.certfleet.test", `,"key_dist_policy":"MASTER_ONLY","server_decrypt_export":true`)
	a := e.device(uid, "aaaaaaaa-0000-4000-8000-00000000000a")
	self := func(certID int64) string { return fmt.Sprintf("/apiv1/devices/self/certificates/%d", certID) }
	assignPath := fmt.Sprintf("/apiv1/users/%d/devices/%d/certificates", uid, a.dev.ID)

	// 14, first half: assigned before it is issued, the wrap is pending.
	r = e.do("POST", assignPath, fmt.Sprintf(`{"certificate_id":%d}`, hybrid), session)
	e.want(r, 201, "")
	if sigs := e.sig.take(); len(sigs) != 1 || sigs[0].Type != "cert.updated" || sigs[0].Ref["wrap_ready"] != false || sigs[0].DeviceID != a.dev.ID {
		t.Fatalf("signals %+v", sigs)
	}
	r = e.get(self(hybrid)+"/deploy-materials", a.token)
	if r.Status != 409 || !strings.Contains(r.Body, "WRAP_PENDING") || r.Error.Key != "WRAP_PENDING" {
		t.Fatalf("materials before issue: %d %s", r.Status, r.Body)
	}
	if r = e.get(self(hybrid), a.token); r.Status != 409 || r.Error.Key != issuance.ReasonNotIssued {
		t.Fatalf("detail before issue: %d %s", r.Status, r.Body)
	}

	e.waitIssued(session, hybrid)
	e.waitIssued(session, master)
	// Still pending: a GET never wraps.
	if r = e.get(self(hybrid)+"/deploy-materials", a.token); r.Status != 409 || !strings.Contains(r.Body, "WRAP_PENDING") {
		t.Fatalf("materials before Rewrap: %d %s", r.Status, r.Body)
	}
	// The issuance hook.
	if err := e.as.Rewrap(context.Background(), uid, hybrid); err != nil {
		t.Fatal(err)
	}
	if sigs := e.sig.take(); len(sigs) != 1 || sigs[0].Ref["wrap_ready"] != true || sigs[0].Ref["cert_id"] != hybrid {
		t.Fatalf("signals after Rewrap %+v", sigs)
	}

	// 13: detail 200 without a key, materials 200 that decrypt to the
	// certificate's key.
	r = e.get(self(hybrid), a.token)
	e.want(r, 200, "")
	detail := decode[deviceCertDetail](t, r)
	if detail.ID != hybrid || detail.DomainName != "hybrid.certfleet.test" || detail.KeyDistPolicy != "HYBRID" || detail.ServerDecryptExport ||
		!strings.HasPrefix(detail.CertificatePEM, "-----BEGIN CERTIFICATE-----") || detail.ChainPEM == "" ||
		detail.FullchainPEM != detail.CertificatePEM+detail.ChainPEM || strings.Contains(r.Body, "PRIVATE KEY") || strings.Contains(r.Body, "key_der") {
		t.Fatalf("detail %s", r.Body)
	}
	leaf := leafOf(t, detail.CertificatePEM)
	r = e.get(self(hybrid)+"/deploy-materials", a.token)
	e.want(r, 200, "")
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	openDeviceCertAEAD(t, r, a, leaf)

	// 15: MASTER_ONLY with server_decrypt_export: plaintext; the §4.4
	// automation assigns it.
	r = e.do("POST", "/apiv1/me/certificate-assign", fmt.Sprintf(`{"device_public_id":%q,"certificate_id":%d}`, a.dev.PublicID, master), session)
	e.want(r, 200, "")
	r = e.get(self(master)+"/deploy-materials", a.token)
	e.want(r, 200, "")
	var plain struct {
		Scheme string `json:"enc_scheme"`
		DER    []byte `json:"private_key_der_b64"`
		Cert   string `json:"certificate_pem"`
	}
	json.Unmarshal(r.Data, &plain)
	if plain.Scheme != "plaintext" {
		t.Fatalf("materials %s", r.Body)
	}
	sameDeviceCertKey(t, plain.DER, leafOf(t, plain.Cert))
	e.want(e.do("PUT", fmt.Sprintf("/apiv1/me/certificates/%d", master), `{"server_decrypt_export":false}`, session), 200, "")
	if r = e.get(self(master)+"/deploy-materials", a.token); r.Status != 403 || r.Error.Key != "EXPORT_FORBIDDEN" {
		t.Fatalf("materials without server_decrypt_export: %d %s", r.Status, r.Body)
	}

	list := e.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/certificates", a.dev.ID), "", session)
	e.want(list, 200, "")
	if views := decode[[]struct {
		CertificateID int64 `json:"certificate_id"`
		WrapReady     bool  `json:"wrap_ready"`
	}](t, list); len(views) != 2 || views[0].CertificateID != hybrid || !views[0].WrapReady || views[1].CertificateID != master {
		t.Fatalf("list %s", list.Body)
	}

	// Isolation: another user reaches neither the device nor the
	// certificate; another user's device reads nothing of ours.
	b := e.device(otherUID, "bbbbbbbb-0000-4000-8000-00000000000b")
	e.want(e.do("POST", assignPath, fmt.Sprintf(`{"certificate_id":%d}`, hybrid), otherSession), 403, "")
	e.want(e.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", a.dev.ID), fmt.Sprintf(`{"certificate_id":%d}`, hybrid), otherSession), 404, "")
	e.want(e.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", b.dev.ID), fmt.Sprintf(`{"certificate_id":%d}`, hybrid), otherSession), 404, "")
	e.want(e.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/certificates", a.dev.ID), "", otherSession), 404, "")
	e.want(e.do("POST", "/apiv1/me/certificate-assign", fmt.Sprintf(`{"device_public_id":%q,"certificate_id":%d}`, a.dev.PublicID, hybrid), otherSession), 404, "")
	for _, p := range []string{self(hybrid), self(hybrid) + "/deploy-materials", self(master)} {
		if r := e.get(p, b.token); r.Status != 404 || strings.Contains(r.Body, "CERTIFICATE") {
			t.Fatalf("device B: %s: %d %s", p, r.Status, r.Body)
		}
	}
	if r := e.get(self(hybrid), "not-a-token"); r.Status != 401 {
		t.Fatalf("bad token: %d", r.Status)
	}
	e.want(e.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/nothing", a.dev.ID), "", session), 404, "")

	// API keys: certificates:assign on one certificate assigns it without
	// naming it; without the grant, 403.
	_, key, err := e.ids.CreateAPIKey(context.Background(), uid, identity.NewAPIKey{Name: "assign-one",
		Permissions: []identity.Permission{{ObType: "certificates", ObID: fmt.Sprint(hybrid), Actions: []string{"assign"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := e.device(uid, "cccccccc-0000-4000-8000-00000000000c")
	r = e.do("POST", "/apiv1/me/certificate-assign", fmt.Sprintf(`{"device_public_id":%q}`, c.dev.PublicID), key)
	e.want(r, 200, "")
	if ok, _ := e.as.IsAssigned(context.Background(), uid, c.dev.ID, hybrid); !ok || !strings.Contains(r.Body, "assigned") {
		t.Fatalf("automation: %s", r.Body)
	}
	openDeviceCertAEAD(t, e.get(self(hybrid)+"/deploy-materials", c.token), c, leaf)
	e.want(e.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/certificates", c.dev.ID), fmt.Sprintf(`{"certificate_id":%d}`, master), key), 403, "")
	e.want(e.do("POST", "/apiv1/me/certificate-assign", fmt.Sprintf(`{"device_public_id":%q}`, c.dev.PublicID), session), 400, "certificate_id")
	e.sig.take()

	// 17: unassign signals cert.unassigned; detail and materials are 404.
	e.want(e.do("DELETE", fmt.Sprintf("/apiv1/me/devices/%d/certificates/%d", a.dev.ID, hybrid), "", session), 204, "")
	if sigs := e.sig.take(); len(sigs) != 1 || sigs[0].Type != "cert.unassigned" || sigs[0].Ref["cert_id"] != hybrid || sigs[0].DeviceID != a.dev.ID {
		t.Fatalf("signals %+v", sigs)
	}
	for _, p := range []string{self(hybrid), self(hybrid) + "/deploy-materials"} {
		if r := e.get(p, a.token); r.Status != 404 {
			t.Fatalf("%s after unassign: %d %s", p, r.Status, r.Body)
		}
	}
	e.want(e.do("DELETE", fmt.Sprintf("/apiv1/me/devices/%d/certificates/%d", a.dev.ID, hybrid), "", session), 404, "")
	// Device C still has it.
	e.want(e.get(self(hybrid)+"/deploy-materials", c.token), 200, "")
	// A deleted device's token reads nothing.
	e.want(e.do("DELETE", fmt.Sprintf("/apiv1/me/devices/%d", c.dev.ID), "", session), 204, "")
	if r := e.get(self(hybrid), c.token); r.Status != 403 {
		t.Fatalf("deleted device: %d %s", r.Status, r.Body)
	}
}
