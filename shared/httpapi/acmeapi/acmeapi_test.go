package acmeapi_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/acmeapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/queue"
	queuelocal "github.com/certfleet/certfleet/shared/queue/local"
	"github.com/certfleet/certfleet/shared/ratelimit"
	"github.com/certfleet/certfleet/shared/store/bolt"
)

// env is the seed 004 route group over real parts: bbolt, the local
// master key, a durable local queue in its own bbolt file, the lego CA
// adapter, one Pebble playing Let's Encrypt and one requiring external
// account binding playing Google Trust Services.
type env struct {
	t        *testing.T
	h        http.Handler
	svc      *acmeacct.Service
	ids      *identity.Service
	q        *queuelocal.Queue
	le, goog *pebbletest.Pebble
	// eabKid and eabHMAC are the EAB credentials the "google" Pebble knows.
	eabKid, eabHMAC string
}

func newEnv(t *testing.T, rateLimit int) *env {
	t.Helper()
	eabKid, eabHMAC := "kid-1", randomHMAC()
	le := pebbletest.Start(t, pebbletest.Options{})
	goog := pebbletest.Start(t, pebbletest.Options{EAB: map[string]string{eabKid: eabHMAC}})
	p := testenv.New(t)
	ca, err := acme.New(acme.Config{RootsPEMFile: le.RootsPEMFile})
	if err != nil {
		t.Fatal(err)
	}
	qdb, err := bolt.OpenDB(filepath.Join(t.TempDir(), "acmeapi-queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qdb.Close() })
	q, err := queuelocal.New(qdb, "acme", queuelocal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := acmeacct.New(p.Store, p.Sealer, q, ca, acmeacct.Config{
		Directories: map[string]string{"letsencrypt": le.DirectoryURL, "google": goog.DirectoryURL},
		Now:         p.Clock.Now, Log: p.Log})
	ids := p.Identity()
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", rateLimit, time.Minute, nil), CookieName: "cjj365"}
	h := httpapi.Wrap(httpapi.NewRouter(acmeapi.Group(svc, guard)), p.Log)
	return &env{t: t, h: h, svc: svc, ids: ids, q: q, le: le, goog: goog, eabKid: eabKid, eabHMAC: eabHMAC}
}

func randomHMAC() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// user registers an active user and returns a session token and its id.
func (e *env) user(email string) (session string, id int64) {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.ids.Register(ctx, identity.Registration{Email: email, Password: "Correct1Horse", Active: true})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := e.ids.StartSession(ctx, u)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Token, u.ID
}

// apiKey makes an API key of the user with the given grants.
func (e *env) apiKey(userID int64, perms ...identity.Permission) string {
	e.t.Helper()
	_, token, err := e.ids.CreateAPIKey(context.Background(), userID, identity.NewAPIKey{Name: "test", Permissions: perms})
	if err != nil {
		e.t.Fatal(err)
	}
	return token
}

// register runs the queued registration steps as the worker would and
// returns how many ran.
func (e *env) register() int {
	e.t.Helper()
	ctx := context.Background()
	n := 0
	for {
		ds, err := e.q.Receive(ctx, queue.MaxReceiveBatch, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(ds) == 0 {
			return n
		}
		for _, d := range ds {
			if d.Kind != acmeacct.KindRegister {
				e.t.Fatalf("queued kind %q", d.Kind)
			}
			if err := e.svc.RegisterStep(ctx, d); err != nil {
				e.t.Fatalf("registration step: %v", err)
			}
			if err := e.q.Ack(ctx, d); err != nil {
				e.t.Fatal(err)
			}
			n++
		}
	}
}

// reply is a response in the seed 004 envelope.
type reply struct {
	Status  int
	Code    int
	Message string
	Data    json.RawMessage
	Header  http.Header
	Body    string
}

// do sends a request; cred is a session token, an "ak_..." API key
// (Bearer) or "". Every answer must be exactly the seed's envelope.
func (e *env) do(method, path, body, cred string) reply {
	e.t.Helper()
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	req.RemoteAddr = "198.51.100.7:5555"
	switch {
	case strings.HasPrefix(cred, "ak_"):
		req.Header.Set("Authorization", "Bearer "+cred)
	case cred != "":
		req.AddCookie(&http.Cookie{Name: "cjj365", Value: cred})
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	r := reply{Status: rec.Code, Header: rec.Header(), Body: rec.Body.String()}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &members); err != nil {
		e.t.Fatalf("%s %s: not a JSON object: %s", method, path, r.Body)
	}
	if len(members) != 3 || members["code"] == nil || members["message"] == nil || members["data"] == nil {
		e.t.Fatalf("%s %s: not the seed envelope: %s", method, path, r.Body)
	}
	_ = json.Unmarshal(members["code"], &r.Code)
	_ = json.Unmarshal(members["message"], &r.Message)
	r.Data = members["data"]
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return r
}

// ok checks a success and returns its page.
func ok[T any](t *testing.T, r reply) acmeapi.Page[T] {
	t.Helper()
	if r.Status != 200 || r.Code != 0 || r.Message != "success" {
		t.Fatalf("want success, got %d: %s", r.Status, r.Body)
	}
	var p acmeapi.Page[T]
	if err := json.Unmarshal(r.Data, &p); err != nil {
		t.Fatalf("data is not a page: %s", r.Body)
	}
	if p.Items == nil {
		t.Fatalf("items is not an array: %s", r.Body)
	}
	return p
}

// single checks a success that carries one item, and returns the item.
func single[T any](t *testing.T, r reply) T {
	t.Helper()
	p := ok[T](t, r)
	if len(p.Items) != 1 || p.Total != 1 || p.Page != 1 || p.PageSize != 1 {
		t.Fatalf("want a page of one item: %s", r.Body)
	}
	return p.Items[0]
}

// fails checks a failure: HTTP status, code, data null and the message
// (exact when exact, else a substring).
func (e *env) fails(r reply, status, code int, message string, exact bool) {
	e.t.Helper()
	if r.Status != status || r.Code != code || string(r.Data) != "null" {
		e.t.Fatalf("want %d/%d with data null, got %d: %s", status, code, r.Status, r.Body)
	}
	if exact && r.Message != message || !exact && !strings.Contains(r.Message, message) {
		e.t.Fatalf("message %q, want %q (exact %v)", r.Message, message, exact)
	}
}

// itemKeys returns the member names of the first item of a page.
func itemKeys(t *testing.T, r reply) []string {
	t.Helper()
	var p struct{ Items []map[string]any }
	if err := json.Unmarshal(r.Data, &p); err != nil || len(p.Items) == 0 {
		t.Fatalf("no items: %s", r.Body)
	}
	var keys []string
	for k := range p.Items[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func wantKeys(t *testing.T, r reply, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := itemKeys(t, r); !slices.Equal(got, want) {
		t.Fatalf("item members %v, want %v: %s", got, want, r.Body)
	}
}

// accounts lists all of the caller's accounts (one page of 100).
func (e *env) accounts(cred string) map[int64]acmeapi.AccountItem {
	e.t.Helper()
	p := ok[acmeapi.AccountItem](e.t, e.do("GET", "/api/v1/acme/accounts?pageSize=100", "", cred))
	out := map[int64]acmeapi.AccountItem{}
	for _, a := range p.Items {
		out[a.ID] = a
	}
	return out
}

// create makes an account and returns its item.
func (e *env) create(cred, provider, email, kid, hmac string) acmeapi.CreatedAccount {
	e.t.Helper()
	body := fmt.Sprintf(`{"providerName":%q,"email":%q,"eabKid":%q,"eabHmacKey":%q}`, provider, email, kid, hmac)
	return single[acmeapi.CreatedAccount](e.t, e.do("POST", "/api/v1/acme/account/create", body, cred))
}

func idBody(id int64) string { return fmt.Sprintf(`{"id":%d}`, id) }

func setDefaultBody(providerID, accountID int64) string {
	return fmt.Sprintf(`{"providerId":%d,"accountId":%d}`, providerID, accountID)
}

// Scenario 1: list the providers, create a Let's Encrypt account, which
// the CA registers, and make it the default.
func TestScenario1LetsEncryptAccount(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")

	// 1. Providers: public, the seed's fields, ids 1 and 2 as its appendix.
	r := e.do("GET", "/api/v1/acme/providers", "", "")
	providers := ok[acmeacct.Provider](t, r)
	if providers.Total != len(providers.Items) || providers.Page != 1 || providers.PageSize != len(providers.Items) || providers.Total < 2 {
		t.Fatalf("providers page: %s", r.Body)
	}
	le, goog := providers.Items[0], providers.Items[1]
	if le.ID != 1 || le.Name != "letsencrypt" || le.RequiresEAB || le.Status != "active" || le.DirectoryURL != e.le.DirectoryURL ||
		goog.ID != 2 || goog.Name != "google" || !goog.RequiresEAB || goog.DirectoryURL != e.goog.DirectoryURL {
		t.Fatalf("providers: %s", r.Body)
	}
	for _, k := range []string{`"id"`, `"name"`, `"directoryUrl"`, `"requiresEab"`, `"status"`, `"createdAt":"2026-01-20T10:00:00Z"`, `"updatedAt"`} {
		if !strings.Contains(r.Body, k) {
			t.Fatalf("providers lack %s: %s", k, r.Body)
		}
	}

	// 2. Create: pending, exactly the seed's members (no eabKid when none
	// was given).
	r = e.do("POST", "/api/v1/acme/account/create", `{"providerName":"letsencrypt","email":"admin@example.com","eabKid":"","eabHmacKey":""}`, session)
	created := single[acmeapi.CreatedAccount](t, r)
	wantKeys(t, r, "id", "providerId", "email", "status")
	if created.ProviderID != 1 || created.Email != "admin@example.com" || created.Status != "pending" {
		t.Fatalf("created: %s", r.Body)
	}
	// Pending until the CA confirms: it cannot be the default yet.
	e.fails(e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, created.ID), session), 409, 3002,
		fmt.Sprintf("only an active account can be the default; account %d is pending", created.ID), true)

	if n := e.register(); n != 1 {
		t.Fatalf("%d registration steps ran", n)
	}
	r = e.do("GET", "/api/v1/acme/accounts?page=1&pageSize=20", "", session)
	list := ok[acmeapi.AccountItem](t, r)
	wantKeys(t, r, "id", "providerId", "providerName", "email", "status", "isDefault", "accountUrl", "createdAt", "updatedAt")
	a := list.Items[0]
	if list.Total != 1 || a.ID != created.ID || a.Status != "active" || a.ProviderName != "letsencrypt" || a.IsDefault ||
		!strings.HasPrefix(a.AccountURL, strings.TrimSuffix(e.le.DirectoryURL, "/dir")+"/") || a.CreatedAt.IsZero() {
		t.Fatalf("after registration: %s", r.Body)
	}

	// 3. Set default.
	r = e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, created.ID), session)
	d := single[acmeapi.DefaultItem](t, r)
	wantKeys(t, r, "providerId", "accountId")
	if d.ProviderID != 1 || d.AccountID != created.ID {
		t.Fatalf("set-default: %s", r.Body)
	}
	if !e.accounts(session)[created.ID].IsDefault {
		t.Fatal("the account is not the default after set-default")
	}
	// Setting it again is fine (upsert).
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, created.ID), session))
}

// Scenario 2: a Google Trust Services account with external account
// binding; the right key registers, a wrong HMAC key fails with the CA's
// reason.
func TestScenario2GoogleAccountWithEAB(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")

	r := e.do("POST", "/api/v1/acme/account/create",
		fmt.Sprintf(`{"providerName":"google","email":"admin@example.com","eabKid":%q,"eabHmacKey":%q}`, e.eabKid, e.eabHMAC), session)
	good := single[acmeapi.CreatedAccount](t, r)
	wantKeys(t, r, "id", "providerId", "email", "status", "eabKid")
	if good.ProviderID != 2 || good.Status != "pending" || good.EABKid != e.eabKid || strings.Contains(r.Body, e.eabHMAC) ||
		strings.Contains(strings.ToLower(r.Body), "hmac") {
		t.Fatalf("created: %s", r.Body)
	}
	wrongKey := randomHMAC()
	bad := e.create(session, "google", "other@example.com", e.eabKid, wrongKey)
	unknownKid := e.create(session, "google", "third@example.com", "no-such-kid", e.eabHMAC)
	if n := e.register(); n != 3 {
		t.Fatalf("%d registration steps ran", n)
	}

	r = e.do("GET", "/api/v1/acme/accounts?providerId=2", "", session)
	all := e.accounts(session)
	if g := all[good.ID]; g.Status != "active" || !strings.HasPrefix(g.AccountURL, strings.TrimSuffix(e.goog.DirectoryURL, "/dir")+"/") || g.LastError != "" {
		t.Fatalf("right EAB key: %+v", g)
	}
	for _, id := range []int64{bad.ID, unknownKid.ID} {
		f := all[id]
		if f.Status != "failed" || f.AccountURL != "" || !strings.HasPrefix(f.LastError, "the CA refused the registration: urn:ietf:params:acme:error:") {
			t.Fatalf("wrong EAB credentials: %+v", f)
		}
	}
	t.Logf("wrong HMAC key: lastError %q", all[bad.ID].LastError)
	if strings.Contains(r.Body, e.eabHMAC) || strings.Contains(r.Body, wrongKey) || strings.Contains(r.Body, "eabHmacKey") {
		t.Fatalf("a list carries an EAB HMAC key: %s", r.Body)
	}
	if strings.Contains(r.Body, `"eabKid"`) {
		t.Fatalf("list items carry members the seed does not: %s", r.Body)
	}

	// A failed account is never the default, and cannot be enabled.
	e.fails(e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(2, bad.ID), session), 409, 3002,
		fmt.Sprintf("only an active account can be the default; account %d is failed", bad.ID), true)
	e.fails(e.do("POST", "/api/v1/acme/accounts/enable", idBody(bad.ID), session), 409, 3002,
		fmt.Sprintf("only a disabled account can be enabled; account %d is failed", bad.ID), true)
	// It can be deleted, and the address tried again with the right key.
	single[acmeapi.DeletedItem](t, e.do("POST", "/api/v1/acme/accounts/delete", idBody(bad.ID), session))
	retry := e.create(session, "google", "other@example.com", e.eabKid, e.eabHMAC)
	e.register()
	if got := e.accounts(session)[retry.ID]; got.Status != "active" {
		t.Fatalf("retry with the right key: %+v", got)
	}
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(2, good.ID), session))

	// EAB is required for google.
	for _, body := range []string{
		`{"providerName":"google","email":"x@example.com","eabKid":"","eabHmacKey":""}`,
		`{"providerName":"google","email":"x@example.com"}`,
		`{"providerName":"google","email":"x@example.com","eabKid":"kid-1"}`,
	} {
		e.fails(e.do("POST", "/api/v1/acme/account/create", body, session), 400, 2002,
			"eabKid: provider google requires external account binding: give eabKid and eabHmacKey", true)
	}
	e.fails(e.do("POST", "/api/v1/acme/account/create", `{"providerName":"google","email":"x@example.com","eabKid":"k","eabHmacKey":"not base64!"}`, session),
		400, 2002, "eabHmacKey: must be the base64url key the CA gave", true)
}

// Scenario 3: a second account becomes the default; then the old one can
// be disabled.
func TestScenario3SwitchDefault(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")
	old := e.create(session, "letsencrypt", "admin@example.com", "", "")
	e.register()
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, old.ID), session))

	// 1. Create the new account.
	backup := e.create(session, "letsencrypt", "backup@example.com", "", "")
	e.register()
	// The default cannot be disabled yet.
	e.fails(e.do("POST", "/api/v1/acme/accounts/disable", idBody(old.ID), session), 409, 3002, acmeacct.MsgDisableDefault, true)

	// 2. The new one becomes the default; the old one no longer is.
	d := single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, backup.ID), session))
	if d.ProviderID != 1 || d.AccountID != backup.ID {
		t.Fatalf("set-default: %+v", d)
	}
	all := e.accounts(session)
	if all[old.ID].IsDefault || !all[backup.ID].IsDefault {
		t.Fatalf("defaults after the switch: %+v", all)
	}

	// 3. Disable the old one, now allowed; idempotent.
	for range 2 {
		r := e.do("POST", "/api/v1/acme/accounts/disable", idBody(old.ID), session)
		s := single[acmeapi.StatusItem](t, r)
		wantKeys(t, r, "id", "status")
		if s.ID != old.ID || s.Status != "disabled" {
			t.Fatalf("disable: %s", r.Body)
		}
	}
	if got := e.accounts(session)[old.ID]; got.Status != "disabled" || got.IsDefault || !got.UpdatedAt.After(got.CreatedAt.Add(-time.Second)) {
		t.Fatalf("old account after disable: %+v", got)
	}
	// A disabled account cannot become the default.
	e.fails(e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, old.ID), session), 409, 3002,
		fmt.Sprintf("only an active account can be the default; account %d is disabled", old.ID), true)

	// Enable it again, idempotently; it does not become the default.
	for range 2 {
		s := single[acmeapi.StatusItem](t, e.do("POST", "/api/v1/acme/accounts/enable", idBody(old.ID), session))
		if s.ID != old.ID || s.Status != "active" {
			t.Fatalf("enable: %+v", s)
		}
	}
	if all := e.accounts(session); all[old.ID].Status != "active" || all[old.ID].IsDefault || !all[backup.ID].IsDefault {
		t.Fatalf("after enable: %+v", all)
	}
	// Enabling an active account (never disabled) is a no-op too.
	single[acmeapi.StatusItem](t, e.do("POST", "/api/v1/acme/accounts/enable", idBody(backup.ID), session))
}

// Scenario 4: check which account is the default, move the default away,
// then delete; references from certificates and requests block it.
func TestScenario4SafeDelete(t *testing.T) {
	e := newEnv(t, 1000)
	session, uid := e.user("owner@example.com")
	ctx := context.Background()
	first := e.create(session, "letsencrypt", "admin@example.com", "", "")
	second := e.create(session, "letsencrypt", "backup@example.com", "", "")
	e.register()
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, first.ID), session))

	// 1. Is it the default? Yes: deleting it is refused.
	if !e.accounts(session)[first.ID].IsDefault {
		t.Fatal("the first account is not the default")
	}
	e.fails(e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session), 409, 3002, acmeacct.MsgDeleteDefault, true)

	// 2. Move the default.
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, second.ID), session))

	// References block the delete, certificate requests named first.
	if err := e.svc.Reference(ctx, uid, first.ID, acmeacct.RefCertificate, 1); err != nil {
		t.Fatal(err)
	}
	e.fails(e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session), 409, 3002, acmeacct.MsgRefCerts, true)
	if err := e.svc.Reference(ctx, uid, first.ID, acmeacct.RefRequest, 1); err != nil {
		t.Fatal(err)
	}
	e.fails(e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session), 409, 3002, acmeacct.MsgRefRequests, true)
	if err := e.svc.Reference(ctx, uid, first.ID, acmeacct.RefRequest, -1); err != nil {
		t.Fatal(err)
	}
	e.fails(e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session), 409, 3002, acmeacct.MsgRefCerts, true)
	if err := e.svc.Reference(ctx, uid, first.ID, acmeacct.RefCertificate, -1); err != nil {
		t.Fatal(err)
	}

	// 3. Delete: physical; a second delete finds nothing.
	r := e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session)
	del := single[acmeapi.DeletedItem](t, r)
	wantKeys(t, r, "id", "deleted")
	if del.ID != first.ID || !del.Deleted || !strings.Contains(r.Body, `"deleted":true`) {
		t.Fatalf("delete: %s", r.Body)
	}
	if all := e.accounts(session); len(all) != 1 || !all[second.ID].IsDefault {
		t.Fatalf("after delete: %+v", all)
	}
	e.fails(e.do("POST", "/api/v1/acme/accounts/delete", idBody(first.ID), session), 404, 2001,
		fmt.Sprintf("ACME account %d not found", first.ID), true)
	// The address is free again.
	e.create(session, "letsencrypt", "admin@example.com", "", "")
}

func TestCreateBadInput(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")
	e.create(session, "letsencrypt", "admin@example.com", "", "")
	const (
		reqProvider = "Key: 'CreateAccountRequest.ProviderName' Error:Field validation for 'ProviderName' failed on the 'required' tag"
		reqEmail    = "Key: 'CreateAccountRequest.Email' Error:Field validation for 'Email' failed on the 'required' tag"
		badEmail    = "Key: 'CreateAccountRequest.Email' Error:Field validation for 'Email' failed on the 'email' tag"
	)
	cases := []struct {
		name, body string
		status     int
		code       int
		message    string
		exact      bool
	}{
		// The seed's own example, exactly.
		{"missing providerName", `{"email":"admin@example.com","eabKid":"","eabHmacKey":""}`, 400, 2002, reqProvider, true},
		{"blank providerName", `{"providerName":"  ","email":"admin@example.com"}`, 400, 2002, reqProvider, true},
		{"missing email", `{"providerName":"letsencrypt"}`, 400, 2002, reqEmail, true},
		{"empty email", `{"providerName":"letsencrypt","email":""}`, 400, 2002, reqEmail, true},
		{"both missing", `{}`, 400, 2002, reqProvider + "\n" + reqEmail, true},
		{"null body", `null`, 400, 2002, reqProvider + "\n" + reqEmail, true},
		{"malformed email", `{"providerName":"letsencrypt","email":"not an email"}`, 400, 2002, badEmail, true},
		{"email without domain", `{"providerName":"letsencrypt","email":"admin@"}`, 400, 2002, badEmail, true},
		{"unknown provider", `{"providerName":"nope","email":"admin@example.com"}`, 400, 2002,
			`providerName: unknown provider "nope": see /api/v1/acme/providers`, true},
		{"EAB key id without HMAC key", `{"providerName":"letsencrypt","email":"b@example.com","eabKid":"k"}`, 400, 2002,
			"eabHmacKey: give eabKid and eabHmacKey together", true},
		{"duplicate", `{"providerName":"letsencrypt","email":"admin@example.com"}`, 409, 3002,
			"an account for admin@example.com at letsencrypt already exists", true},
		{"duplicate, other case", `{"providerName":"letsencrypt","email":"Admin@Example.COM"}`, 409, 3002,
			"an account for admin@example.com at letsencrypt already exists", true},
		{"malformed JSON", `{"providerName":"letsencrypt",`, 400, 1001, "request body ends in the middle of a JSON value", true},
		{"syntax error", `{"providerName" "letsencrypt"}`, 400, 1001, "malformed JSON at byte", false},
		{"wrong type", `{"providerName":1,"email":"a@example.com"}`, 400, 1001, `field "providerName" must be a string, not number`, true},
		{"not an object", `["letsencrypt"]`, 400, 1001, "request body must be an object, not array", true},
		{"empty body", ``, 400, 1001, "request body is empty; expected a JSON object", true},
		{"trailing data", `{"providerName":"letsencrypt","email":"c@example.com"} {}`, 400, 1001, "request body has data after the JSON value", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.fails(e.do("POST", "/api/v1/acme/account/create", c.body, session), c.status, c.code, c.message, c.exact)
		})
	}
	e.t = t
	// Nothing above created an account (nor queued a registration) but
	// the first.
	if all := e.accounts(session); len(all) != 1 {
		t.Fatalf("%d accounts after the refusals", len(all))
	}
	if n := e.register(); n != 1 {
		t.Fatalf("%d registrations queued", n)
	}
	// The same address at another provider is another account.
	e.create(session, "google", "admin@example.com", e.eabKid, e.eabHMAC)
}

func TestSetDefaultEnableDisableDeleteBadInput(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")
	otherSession, _ := e.user("other@example.com")
	mine := e.create(session, "letsencrypt", "admin@example.com", "", "")
	pending := e.create(session, "letsencrypt", "pending@example.com", "", "")
	theirs := e.create(otherSession, "letsencrypt", "admin@example.com", "", "")
	// Register all but the pending one.
	ds, err := e.q.Receive(context.Background(), queue.MaxReceiveBatch, 0)
	if err != nil || len(ds) != 3 {
		t.Fatalf("received %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if !strings.Contains(string(d.Body), fmt.Sprintf(`"account_id":%d`, pending.ID)) {
			if err := e.svc.RegisterStep(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
	}

	const (
		reqProviderID = "Key: 'SetDefaultRequest.ProviderID' Error:Field validation for 'ProviderID' failed on the 'required' tag"
		reqAccountID  = "Key: 'SetDefaultRequest.AccountID' Error:Field validation for 'AccountID' failed on the 'required' tag"
		reqID         = "Key: 'IDRequest.ID' Error:Field validation for 'ID' failed on the 'required' tag"
	)
	notFound := func(id int64) string { return fmt.Sprintf("ACME account %d not found", id) }
	cases := []struct {
		name, path, body string
		status, code     int
		message          string
		exact            bool
	}{
		{"set-default: missing providerId", "set-default", fmt.Sprintf(`{"accountId":%d}`, mine.ID), 400, 2002, reqProviderID, true},
		{"set-default: missing accountId", "set-default", `{"providerId":1}`, 400, 2002, reqAccountID, true},
		{"set-default: both missing", "set-default", `{}`, 400, 2002, reqProviderID + "\n" + reqAccountID, true},
		{"set-default: pending", "set-default", setDefaultBody(1, pending.ID), 409, 3002,
			fmt.Sprintf("only an active account can be the default; account %d is pending", pending.ID), true},
		{"set-default: another user's", "set-default", setDefaultBody(1, theirs.ID), 404, 2001, notFound(theirs.ID), true},
		{"set-default: no such account", "set-default", setDefaultBody(1, 999), 404, 2001, notFound(999), true},
		{"set-default: another provider", "set-default", setDefaultBody(2, mine.ID), 400, 2002,
			fmt.Sprintf("providerId: account %d belongs to provider 1, not 2", mine.ID), true},
		{"set-default: accountId a string", "set-default", fmt.Sprintf(`{"providerId":1,"accountId":"%d"}`, mine.ID), 400, 1001,
			`field "accountId" must be a number, not string`, true},
		{"set-default: malformed JSON", "set-default", `{"providerId":1,`, 400, 1001, "request body ends in the middle of a JSON value", true},

		{"enable: pending", "enable", idBody(pending.ID), 409, 3002,
			fmt.Sprintf("only a disabled account can be enabled; account %d is pending", pending.ID), true},
		{"enable: missing id", "enable", `{}`, 400, 2002, reqID, true},
		{"enable: id zero", "enable", `{"id":0}`, 400, 2002, reqID, true},
		{"enable: id a string", "enable", `{"id":"13"}`, 400, 1001, `field "id" must be a number, not string`, true},
		{"enable: id a fraction", "enable", `{"id":1.5}`, 400, 1001, `field "id" must be a number`, false},
		{"enable: another user's", "enable", idBody(theirs.ID), 404, 2001, notFound(theirs.ID), true},
		{"enable: malformed JSON", "enable", `{id:1}`, 400, 1001, "malformed JSON", false},

		{"disable: ID a string (members match case-insensitively)", "disable", `{"ID":""}`, 400, 1001, `must be a number`, false},
		{"disable: id null", "disable", `{"id":null}`, 400, 2002, reqID, true},
		{"disable: id a string", "disable", `{"id":"abc"}`, 400, 1001, `field "id" must be a number, not string`, true},
		{"disable: another user's", "disable", idBody(theirs.ID), 404, 2001, notFound(theirs.ID), true},
		{"disable: no such account", "disable", idBody(12345), 404, 2001, notFound(12345), true},
		{"disable: empty body", "disable", ``, 400, 1001, "request body is empty; expected a JSON object", true},

		{"delete: missing id", "delete", `{}`, 400, 2002, reqID, true},
		{"delete: id a string", "delete", `{"id":"13"}`, 400, 1001, `field "id" must be a number, not string`, true},
		{"delete: another user's", "delete", idBody(theirs.ID), 404, 2001, notFound(theirs.ID), true},
		{"delete: negative id", "delete", `{"id":-3}`, 404, 2001, notFound(-3), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.fails(e.do("POST", "/api/v1/acme/accounts/"+c.path, c.body, session), c.status, c.code, c.message, c.exact)
		})
	}
	e.t = t

	// Nothing changed: the other user's account is as it was, and so are
	// mine.
	if got := e.accounts(otherSession)[theirs.ID]; got.Status != "active" {
		t.Fatalf("the other user's account: %+v", got)
	}
	all := e.accounts(session)
	if len(all) != 2 || all[mine.ID].Status != "active" || all[pending.ID].Status != "pending" || all[mine.ID].IsDefault {
		t.Fatalf("my accounts: %+v", all)
	}
}

func TestListFiltersAndPaging(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("owner@example.com")
	otherSession, _ := e.user("other@example.com")
	e.create(otherSession, "letsencrypt", "someone@example.com", "", "")

	var ids []int64
	for i := range 23 {
		ids = append(ids, e.create(session, "letsencrypt", fmt.Sprintf("user%02d@example.com", i), "", "").ID)
	}
	backup := e.create(session, "letsencrypt", "Backup@Example.com", "", "")
	googID := e.create(session, "google", "backup@example.com", e.eabKid, e.eabHMAC).ID
	if n := e.register(); n != 26 {
		t.Fatalf("%d registrations ran", n)
	}
	single[acmeapi.StatusItem](t, e.do("POST", "/api/v1/acme/accounts/disable", idBody(ids[0]), session))
	single[acmeapi.StatusItem](t, e.do("POST", "/api/v1/acme/accounts/disable", idBody(ids[1]), session))

	type want struct {
		total, page, pageSize int
		first                 int64
		n                     int
	}
	for _, c := range []struct {
		query string
		want  want
	}{
		{"", want{25, 1, 20, ids[0], 20}},
		{"?page=2", want{25, 2, 20, ids[20], 5}},
		{"?page=3", want{25, 3, 20, 0, 0}},
		{"?page=9223372036854775807&pageSize=100", want{25, 9223372036854775807, 100, 0, 0}},
		{"?page=2&pageSize=10", want{25, 2, 10, ids[10], 10}},
		{"?pageSize=1000", want{25, 1, 100, ids[0], 25}},
		{"?page=&pageSize=", want{25, 1, 20, ids[0], 20}},
		{"?providerId=1", want{24, 1, 20, ids[0], 20}},
		{"?providerId=2", want{1, 1, 20, googID, 1}},
		{"?providerId=7", want{0, 1, 20, 0, 0}},
		{"?status=disabled", want{2, 1, 20, ids[0], 2}},
		{"?status=active&providerId=1&page=1&pageSize=20", want{22, 1, 20, ids[2], 20}},
		{"?status=pending", want{0, 1, 20, 0, 0}},
		{"?email=BACKUP", want{2, 1, 20, backup.ID, 2}},
		{"?email=backup&providerId=1", want{1, 1, 20, backup.ID, 1}},
		{"?email=user1", want{10, 1, 20, ids[10], 10}},
		{"?email=nobody", want{0, 1, 20, 0, 0}},
	} {
		r := e.do("GET", "/api/v1/acme/accounts"+c.query, "", session)
		p := ok[acmeapi.AccountItem](t, r)
		got := want{p.Total, p.Page, p.PageSize, 0, len(p.Items)}
		if len(p.Items) > 0 {
			got.first = p.Items[0].ID
		}
		if got != c.want {
			t.Errorf("%q: got %+v, want %+v", c.query, got, c.want)
		}
		if strings.Contains(r.Body, "someone@example.com") {
			t.Errorf("%q: another user's account is listed", c.query)
		}
	}

	for _, q := range []struct{ query, message string }{
		{"?page=0", "page must be a positive integer"},
		{"?page=-1", "page must be a positive integer"},
		{"?page=x", "page must be a positive integer"},
		{"?page=1.5", "page must be a positive integer"},
		{"?page=99999999999999999999", "page must be a positive integer"},
		{"?pageSize=0", "pageSize must be a positive integer"},
		{"?pageSize=ten", "pageSize must be a positive integer"},
		{"?providerId=abc", "providerId must be a positive integer"},
		{"?providerId=0", "providerId must be a positive integer"},
		{"?status=deleted", "status must be one of pending, active, disabled, failed"},
	} {
		e.fails(e.do("GET", "/api/v1/acme/accounts"+q.query, "", session), 400, 1001, q.message, true)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, 1000)
	session, uid := e.user("owner@example.com")
	routes := []struct{ method, path, body, action string }{
		{"POST", "/api/v1/acme/account/create", `{"providerName":"letsencrypt","email":"admin@example.com"}`, "create"},
		{"GET", "/api/v1/acme/accounts", "", "read"},
		{"POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, 1), "update"},
		{"POST", "/api/v1/acme/accounts/enable", idBody(1), "update"},
		{"POST", "/api/v1/acme/accounts/disable", idBody(1), "update"},
		{"POST", "/api/v1/acme/accounts/delete", idBody(1), "delete"},
	}
	certKey := e.apiKey(uid, identity.Permission{ObType: "certificates", ObID: "*", Actions: []string{"read", "create", "update", "delete"}})
	for _, rt := range routes {
		// No credentials, a forged session, a malformed or unknown key: 401.
		e.fails(e.do(rt.method, rt.path, rt.body, ""), 401, 4001, "log in, or send Authorization: Bearer ak_... with an API key", true)
		e.fails(e.do(rt.method, rt.path, rt.body, "forged-session"), 401, 4001, "session", false)
		e.fails(e.do(rt.method, rt.path, rt.body, "ak_0000000000000000_nope"), 401, 4001, "", false)
		// A key without acme_accounts: 403.
		e.fails(e.do(rt.method, rt.path, rt.body, certKey), 403, 4003, "API key lacks permission acme_accounts:"+rt.action, true)
		// A key with only this action passes the guard (the handler then
		// answers whatever it answers, in the envelope).
		key := e.apiKey(uid, identity.Permission{ObType: "acme_accounts", ObID: "*", Actions: []string{rt.action}})
		if r := e.do(rt.method, rt.path, rt.body, key); r.Status == 401 || r.Status == 403 {
			t.Fatalf("%s %s with an acme_accounts:%s key: %s", rt.method, rt.path, rt.action, r.Body)
		}
	}
	// Authorization that is not Bearer ak_...: 401 in the envelope.
	req := httptest.NewRequest("GET", "/api/v1/acme/accounts", nil)
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), `"code":4001`) || !strings.Contains(rec.Body.String(), `"data":null`) {
		t.Fatalf("Basic auth: %d %s", rec.Code, rec.Body)
	}

	// A read-only key lists but does not change.
	ro := e.apiKey(uid, identity.Permission{ObType: "acme_accounts", ObID: "*", Actions: []string{"read"}})
	ok[acmeapi.AccountItem](t, e.do("GET", "/api/v1/acme/accounts", "", ro))
	e.fails(e.do("POST", "/api/v1/acme/account/create", `{"providerName":"letsencrypt","email":"b@example.com"}`, ro), 403, 4003,
		"API key lacks permission acme_accounts:create", true)
	// A full key does the whole flow.
	full := e.apiKey(uid, identity.Permission{ObType: "acme_accounts", ObID: "*", Actions: []string{"read", "create", "update", "delete"}})
	a := e.create(full, "letsencrypt", "full@example.com", "", "")
	e.register()
	single[acmeapi.DefaultItem](t, e.do("POST", "/api/v1/acme/accounts/set-default", setDefaultBody(1, a.ID), full))
	if !e.accounts(session)[a.ID].IsDefault {
		t.Fatal("the key's account is not the session's")
	}

	// Providers are public, and also answer callers with credentials.
	ok[acmeacct.Provider](t, e.do("GET", "/api/v1/acme/providers", "", ""))
	ok[acmeacct.Provider](t, e.do("GET", "/api/v1/acme/providers", "", certKey))
	ok[acmeacct.Provider](t, e.do("GET", "/api/v1/acme/providers", "", "forged-session"))
}

func TestRateLimitInEnvelope(t *testing.T) {
	e := newEnv(t, 3)
	session, _ := e.user("owner@example.com")
	for range 3 {
		ok[acmeapi.AccountItem](t, e.do("GET", "/api/v1/acme/accounts", "", session))
	}
	r := e.do("GET", "/api/v1/acme/accounts", "", session)
	e.fails(r, 429, 4029, "too many requests: at most 3 per minute", true)
	if s := r.Header.Get("Retry-After"); s == "" || s == "0" {
		t.Fatalf("Retry-After %q", s)
	}
	// The public route is counted per client address.
	for range 3 {
		ok[acmeacct.Provider](t, e.do("GET", "/api/v1/acme/providers", "", ""))
	}
	e.fails(e.do("GET", "/api/v1/acme/providers", "", ""), 429, 4029, "too many requests", false)
}

func TestRoutesOfTheSeed(t *testing.T) {
	g := acmeapi.Group(nil, &httpapi.Guard{})
	var got []string
	for _, r := range g.Routes {
		got = append(got, r.Method+" "+r.Path)
	}
	want := []string{
		"GET /api/v1/acme/providers",
		"POST /api/v1/acme/account/create",
		"GET /api/v1/acme/accounts",
		"POST /api/v1/acme/accounts/set-default",
		"POST /api/v1/acme/accounts/enable",
		"POST /api/v1/acme/accounts/disable",
		"POST /api/v1/acme/accounts/delete",
	}
	if g.Name != "acmeapi" || !slices.Equal(got, want) {
		t.Fatalf("group %q routes %v", g.Name, got)
	}
}

func TestStatusTable(t *testing.T) {
	for _, c := range []struct {
		err          error
		status, code int
		message      string
	}{
		{errors.New("bbolt: database not open"), 500, 5000, "internal error"},
		{fmt.Errorf("acmeacct: list: %w", errors.New("disk")), 500, 5000, "internal error"},
		{apperr.New(apperr.Internal, "secret detail"), 500, 5000, "internal error"},
		{apperr.New(apperr.Unavailable, "could not queue the registration; try again"), 503, 5000, "could not queue the registration; try again"},
		{apperr.New(apperr.Conflict, acmeacct.MsgDeleteDefault), 409, 3002, acmeacct.MsgDeleteDefault},
		{apperr.New(apperr.NotFound, "gone"), 404, 2001, "gone"},
		{apperr.InvalidField("email", "bad"), 400, 2002, "email: bad"},
		{apperr.New(apperr.BadJSON, "bad json"), 400, 1001, "bad json"},
		{apperr.New(apperr.TooLarge, "too big"), 413, 1001, "too big"},
		{apperr.New(apperr.Unauthorized, "who"), 401, 4001, "who"},
		{apperr.New(apperr.Forbidden, "no"), 403, 4003, "no"},
		{apperr.New(apperr.RateLimit, "slow"), 429, 4029, "slow"},
	} {
		status, code, msg := acmeapi.Status(c.err)
		if status != c.status || code != c.code || msg != c.message {
			t.Errorf("%v: %d/%d %q, want %d/%d %q", c.err, status, code, msg, c.status, c.code, c.message)
		}
	}
}
