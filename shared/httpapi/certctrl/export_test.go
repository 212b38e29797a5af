package certctrl_test

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testlog"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// exportEnv serves the auth, ACME account, certificate and issue groups
// over real parts, with a worker running the registration and issuance
// steps against Pebble, which validates HTTP-01 against the challenge
// group on a loopback port (every name resolves to 127.0.0.1).
type exportEnv struct {
	*env
	logs *testlog.Buffer
}

func newExportEnv(t *testing.T) *exportEnv {
	t.Helper()
	is := startIssuing(t)
	p, accts, certSvc, iss := is.p, is.accts, is.certs, is.iss

	ids := p.Identity()
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	logs := &testlog.Buffer{}
	h := httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(accts, guard),
		certctrl.CertificatesGroup(certSvc, guard),
		certctrl.IssuesGroup(iss, guard)), slog.New(slog.NewJSONHandler(logs, nil)))
	e := &env{Client: testenv.Client{T: t, Handler: h}, t: t, ids: ids, clock: p.Clock, outbox: p.OutboxDir}
	return &exportEnv{env: e, logs: logs}
}

// waitFor polls cond for up to 30 s.
func (e *exportEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// download sends a GET whose success is a file, not the envelope; cred
// is a session cookie value or an "ak_..." API key.
func (e *exportEnv) download(path, cred, password string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.RemoteAddr = "198.51.100.7:5555"
	if strings.HasPrefix(cred, "ak_") {
		req.Header.Set("Authorization", "Bearer "+cred)
	} else if cred != "" {
		req.AddCookie(&http.Cookie{Name: "cjj365", Value: cred})
	}
	if password != "" {
		req.Header.Set(certctrl.ExportPasswordHeader, password)
	}
	rec := httptest.NewRecorder()
	e.Handler.ServeHTTP(rec, req)
	return rec
}

// refused checks a failure in the envelope: status, error.code, error.key
// (when not "") and params.field (when not "").
func (e *exportEnv) refused(rec *httptest.ResponseRecorder, status, code int, key, field string) httpapi.ErrorBody {
	e.t.Helper()
	var env struct {
		Data  json.RawMessage
		Error *httpapi.ErrorBody
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error == nil || env.Data != nil {
		e.t.Fatalf("%d %q: not a failure envelope (%v)", rec.Code, rec.Body, err)
	}
	if rec.Code != status || env.Error.Code != code || (key != "" && env.Error.Key != key) ||
		(field != "" && env.Error.Params["field"] != field) {
		e.t.Fatalf("got %d %s; want %d code %d key %q field %q", rec.Code, rec.Body, status, code, key, field)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("failure Content-Type %q", ct)
	}
	return *env.Error
}

// file checks a successful download's headers and returns its body.
func (e *exportEnv) file(rec *httptest.ResponseRecorder, contentType, filename string) []byte {
	e.t.Helper()
	if rec.Code != 200 {
		e.t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	h := rec.Header()
	if h.Get("Content-Type") != contentType || h.Get("Content-Disposition") != `attachment; filename="`+filename+`"` ||
		h.Get("Cache-Control") != "no-store" || h.Get("Content-Length") != fmt.Sprint(rec.Body.Len()) {
		e.t.Fatalf("headers %v; want %s, attachment %q, no-store", h, contentType, filename)
	}
	return rec.Body.Bytes()
}

func leafOf(t *testing.T, chainPEM string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(chainPEM))
	if b == nil {
		t.Fatalf("no PEM in %q", chainPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestExportRoute issues a certificate over HTTP against Pebble and
// exports it: the history alias, 409 before issue, 403 EXPORT_FORBIDDEN
// until server_decrypt_export is set (and always under DEVICE_REQUIRED),
// 400s for bad parameters, each format's headers and contents, the API
// key scope, export after revocation, and no key material or password
// in the logs.
func TestExportRoute(t *testing.T) {
	e := newExportEnv(t)
	session, uid := e.registerActive("owner@example.com")
	otherSession, _ := e.registerActive("other@example.com")

	r := e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"ops@example.com"}`, session)
	e.want(r, 201, "")
	acct := decode[acctView](t, r)
	e.waitFor("the ACME account to register", func() bool {
		return decode[acctView](t, e.do("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", acct.ID), "", session)).Status == "active"
	})
	const name = "export.certfleet.test"
	r = e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":%q,"sans":["www.%s"],"acct_id":%d}`, name, name, acct.ID), session)
	e.want(r, 201, "")
	cert := decode[certView](t, r)
	if cert.ServerDecryptExport {
		t.Fatalf("server_decrypt_export on by default: %s", r.Body)
	}
	base := fmt.Sprintf("/apiv1/users/%d/certificates/%d", uid, cert.ID)
	me := fmt.Sprintf("/apiv1/me/certificates/%d", cert.ID)

	// Before issue: 409 NOT_ISSUED (certificates alone); with the key the
	// policy answers first.
	e.refused(e.download(me+"/export?include_key=false", session, ""), 409, 5009, issuance.ReasonNotIssued, "")
	e.refused(e.download(me+"/export", session, ""), 403, 5022, issuance.ReasonExportForbidden, "")

	// Issue, watching through the history alias.
	e.want(e.do("POST", base+"/issues", "", session), 202, "")
	var issue issueView
	e.waitFor("the issue", func() bool {
		r := e.do("GET", me+"/issues/history", "", session)
		e.want(r, 200, "")
		list := decode[[]issueView](t, r)
		issue = list[0]
		return issue.Step == issuance.StepDone
	})
	if issue.Status != issuance.StatusIssued {
		t.Fatalf("issue ended %s", issue.Status)
	}
	hist, alias := e.do("GET", base+"/issues", "", session), e.do("GET", base+"/issues/history?limit=10", "", session)
	e.want(hist, 200, "")
	e.want(alias, 200, "")
	if string(hist.Data) != string(alias.Data) {
		t.Fatalf("issues/history differs from issues:\n%s\n%s", alias.Data, hist.Data)
	}
	issued := decode[[]struct {
		CertificatePEM string `json:"certificate_pem"`
	}](t, hist)
	if len(issued) != 1 {
		t.Fatalf("history: %s", hist.Data)
	}
	leaf := leafOf(t, issued[0].CertificatePEM)

	// The key stays locked: 403 EXPORT_FORBIDDEN in the envelope, for
	// every format.
	for _, q := range []string{"", "?format=zip", "?format=pem&include_key=true"} {
		body := e.refused(e.download(base+"/export"+q, session, ""), 403, 5022, issuance.ReasonExportForbidden, "")
		if !strings.Contains(body.What, "disabled by policy") {
			t.Errorf("403 says %q", body.What)
		}
	}
	e.refused(e.download(me+"/export?format=pfx", session, "pw"), 403, 5022, issuance.ReasonExportForbidden, "")

	// Bad requests: 400 naming the parameter.
	e.refused(e.download(me+"/export?format=p7b", session, ""), 400, 5000, "", "format")
	e.refused(e.download(me+"/export?include_key=maybe", session, ""), 400, 5000, "", "include_key")
	e.refused(e.download(me+"/export?format=pfx&include_key=false", session, "pw"), 400, 5000, "", "include_key")
	e.refused(e.download(me+"/export?format=pfx", session, ""), 400, 5000, "", "password")

	// Certificates alone need no policy.
	zipped := e.file(e.download(me+"/export?include_key=false", session, ""), "application/zip", name+".zip")
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Name == name+"/cert.pem" {
			rc, _ := f.Open()
			var b bytes.Buffer
			b.ReadFrom(rc)
			rc.Close()
			if !leafOf(t, b.String()).Equal(leaf) {
				t.Error("cert.pem is not the issued leaf")
			}
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{name + "/cert.pem", name + "/chain.pem", name + "/fullchain.pem"}) {
		t.Errorf("zip without the key holds %q", names)
	}

	// Allow server-decrypted export on the certificate: the key comes.
	e.want(e.do("PUT", me, `{"server_decrypt_export":true}`, session), 200, "")
	pemFile := e.file(e.download(base+"/export?format=pem", session, ""), "application/x-pem-file", name+".pem")
	var blocks []string
	var key crypto.PrivateKey
	for rest := pemFile; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b.Type)
		if b.Type == "PRIVATE KEY" {
			if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(blocks) < 3 || blocks[0] != "CERTIFICATE" || blocks[len(blocks)-1] != "PRIVATE KEY" || key == nil ||
		!key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatalf("pem export holds %q, not the full chain and the leaf's key", blocks)
	}
	zipped = e.file(e.download(me+"/export?format=zip", session, ""), "application/zip", name+".zip")
	if zr, err = zip.NewReader(bytes.NewReader(zipped), int64(len(zipped))); err != nil || len(zr.File) != 4 || zr.File[3].Name != name+"/privkey.pem" {
		t.Fatalf("zip with the key: %v", err)
	}
	const password = "s3cret pfx password"
	pfx := e.file(e.download(me+"/export?format=pfx", session, password), "application/x-pkcs12", name+".pfx")
	pk, pleaf, chain, err := pkcs12.DecodeChain(pfx, password)
	if err != nil || !pleaf.Equal(leaf) || len(chain) == 0 ||
		!pk.(interface{ Equal(crypto.PrivateKey) bool }).Equal(key) {
		t.Fatalf("pfx: %v", err)
	}

	// Another user gets nothing: 403 on the owner's path, 404 on /me.
	e.refused(e.download(base+"/export", otherSession, ""), 403, 5022, "", "")
	e.refused(e.download(me+"/export", otherSession, ""), 404, 5003, "", "")
	e.refused(e.download(me+"/export", "", ""), 401, 5018, "", "")

	// API keys need certificates:export.
	readKey := e.createKey(session, "/apiv1/me/apikeys", certReadAll)
	body := e.refused(e.download(me+"/export", readKey.Token, ""), 403, 5022, "", "")
	if !strings.Contains(body.What, "certificates:export") {
		t.Errorf("scope refusal says %q", body.What)
	}
	exportKey := e.createKey(session, "/apiv1/me/apikeys",
		fmt.Sprintf(`{"name":"deploy","permissions":[{"obtype":"certificates","obid":"%d","actions":["export"]}]}`, cert.ID))
	e.file(e.download(me+"/export?format=pem", exportKey.Token, ""), "application/x-pem-file", name+".pem")

	// DEVICE_REQUIRED never allows it: the flag cannot stay on, and with
	// it off the key is refused again.
	e.want(e.do("PUT", me, `{"policy":"DEVICE_REQUIRED"}`, session), 400, "never allows server-decrypted export")
	e.want(e.do("PUT", me, `{"policy":"DEVICE_REQUIRED","server_decrypt_export":false}`, session), 200, "")
	e.refused(e.download(me+"/export", session, ""), 403, 5022, issuance.ReasonExportForbidden, "")
	e.file(e.download(me+"/export?format=pem&include_key=false", session, ""), "application/x-pem-file", name+".pem")

	// A revoked certificate is still exported.
	e.want(e.do("POST", me+"/revoke", `{"reason":4}`, session), 200, "")
	if got := decode[certView](t, e.do("GET", me, "", session)); got.Status != "revoked" {
		t.Fatalf("certificate after revocation: %s", got.Status)
	}
	revoked := e.file(e.download(me+"/export?format=pem&include_key=false", session, ""), "application/x-pem-file", name+".pem")
	if !leafOf(t, string(revoked)).Equal(leaf) {
		t.Error("the revoked export is not the issued leaf")
	}

	// Nothing secret reached the logs.
	logs := e.logs.String()
	if !strings.Contains(logs, "/export") {
		t.Fatalf("no access log lines for the exports")
	}
	for _, secret := range []string{"PRIVATE KEY", password, "BEGIN CERTIFICATE"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold %q", secret)
		}
	}
}
