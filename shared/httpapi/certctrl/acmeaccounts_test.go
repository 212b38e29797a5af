package certctrl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// acmeEnv serves the auth and ACME account groups over real parts, with
// Pebble playing Let's Encrypt.
type acmeEnv struct {
	*env
	parts  *testenv.Parts
	svc    *acmeacct.Service
	pebble *pebbletest.Pebble
}

func newACMEEnv(t *testing.T) *acmeEnv {
	t.Helper()
	p := testenv.New(t)
	svc, peb := p.ACMEAccounts(t, pebbletest.Options{})
	ids := p.Identity()
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	h := httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(svc, guard)), p.Log)
	e := &env{Client: testenv.Client{T: t, Handler: h}, t: t, ids: ids, clock: p.Clock, outbox: p.OutboxDir}
	return &acmeEnv{env: e, parts: p, svc: svc, pebble: peb}
}

// register runs the queued registration steps, as the worker would.
func (e *acmeEnv) register() int {
	return e.parts.RunQueued(e.t, map[string]func(context.Context, queue.Delivery) error{acmeacct.KindRegister: e.svc.RegisterStep})
}

type acctView struct {
	ID           int64  `json:"id"`
	ProviderID   int64  `json:"provider_id"`
	ProviderName string `json:"provider_name"`
	Email        string `json:"email"`
	Status       string `json:"status"`
	IsDefault    bool   `json:"is_default"`
	AccountURL   string `json:"account_url"`
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Data, &v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
	return v
}

func TestACMEAccountsCertCtrlDialect(t *testing.T) {
	e := newACMEEnv(t)
	session, uid := e.registerActive("owner@example.com")
	base := fmt.Sprintf("/apiv1/users/%d/acme-accounts", uid)

	r := e.do("POST", base, `{"provider_name":"letsencrypt","email":"ops@example.com"}`, session)
	e.want(r, 201, "")
	first := decode[acctView](t, r)
	if first.Status != "pending" || first.ProviderID != 1 || strings.Contains(r.Body, "key") {
		t.Fatalf("created: %s", r.Body)
	}
	if n := e.register(); n != 1 {
		t.Fatalf("%d registration steps ran", n)
	}
	got := decode[acctView](t, e.do("GET", fmt.Sprintf("%s/%d", base, first.ID), "", session))
	if got.Status != "active" || !strings.HasPrefix(got.AccountURL, "https://127.0.0.1:") {
		t.Fatalf("after registration: %+v", got)
	}

	// Bad inputs, each naming its field.
	for _, c := range []struct{ body, field, what string }{
		{`{"email":"ops@example.com"}`, "provider_name", "required"},
		{`{"provider_name":"nope","email":"ops@example.com"}`, "provider_name", `unknown provider "nope"`},
		{`{"provider_name":"letsencrypt","email":"not an email"}`, "email", "not a valid email"},
		{`{"provider_name":"google","email":"ops@example.com"}`, "eab_kid", "requires external account binding"},
	} {
		r := e.do("POST", base, c.body, session)
		e.want(r, 400, c.what)
		if r.Error.Params["field"] != c.field {
			t.Errorf("%s: field %v, want %s", c.body, r.Error.Params["field"], c.field)
		}
	}
	e.want(e.do("POST", base, `{"provider_name":"letsencrypt","email":"OPS@example.com"}`, session), 409, "already exists")

	// Default, switch, disable, delete: the seed 004 rules in this dialect.
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"is_default":true}`, session), 200, "")
	second := decode[acctView](t, e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"backup@example.com"}`, session))
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, second.ID), `{"is_default":true}`, session), 409, "only an active account")
	e.register()
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"status":"disabled"}`, session), 409, acmeacct.MsgDisableDefault)
	e.want(e.do("DELETE", fmt.Sprintf("%s/%d", base, first.ID), "", session), 409, acmeacct.MsgDeleteDefault)
	r = e.do("PUT", fmt.Sprintf("/apiv1/me/acme-accounts/%d", second.ID), `{"is_default":true}`, session)
	if r.Status != 200 || !decode[acctView](t, r).IsDefault {
		t.Fatalf("switch default: %s", r.Body)
	}
	list := e.do("GET", base+"?limit=10", "", session)
	views := decode[[]acctView](t, list)
	if len(views) != 2 || views[0].IsDefault || !views[1].IsDefault || list.Header.Get("X-Total-Count") != "2" {
		t.Fatalf("list after switch: %s", list.Body)
	}
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"status":"disabled"}`, session), 200, "")
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"status":"disabled"}`, session), 200, "")
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"is_default":true}`, session), 409, "only an active account")
	if err := e.svc.Reference(context.Background(), uid, first.ID, acmeacct.RefCertificate, 1); err == nil {
		t.Fatal("a disabled account accepted a new reference")
	}
	e.want(e.do("PUT", fmt.Sprintf("%s/%d", base, first.ID), `{"status":"active"}`, session), 200, "")
	if err := e.svc.Reference(context.Background(), uid, first.ID, acmeacct.RefCertificate, 1); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("DELETE", fmt.Sprintf("%s/%d", base, first.ID), "", session), 409, acmeacct.MsgRefCerts)
	if err := e.svc.Reference(context.Background(), uid, first.ID, acmeacct.RefCertificate, -1); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("DELETE", fmt.Sprintf("%s/%d", base, first.ID), "", session), 204, "")
	e.want(e.do("GET", fmt.Sprintf("%s/%d", base, first.ID), "", session), 404, "not found")
	// Deleted for good: the address can be registered again.
	e.want(e.do("POST", base, `{"provider_name":"letsencrypt","email":"ops@example.com"}`, session), 201, "")
}

func TestACMEAccountKeysAndScopes(t *testing.T) {
	e := newACMEEnv(t)
	session, uid := e.registerActive("keys@example.com")
	key := func(obtype string) string {
		_, token, err := e.ids.CreateAPIKey(context.Background(), uid, identity.NewAPIKey{Name: obtype,
			Permissions: []identity.Permission{{ObType: obtype, ObID: "*", Actions: []string{"read"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	roToken, certToken := key("acme_accounts"), key("certificates")
	e.want(e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"a@example.com"}`, session), 201, "")
	e.want(e.do("GET", "/apiv1/me/acme-accounts", "", roToken), 200, "")
	e.want(e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"b@example.com"}`, roToken), 403, "acme_accounts:create")
	e.want(e.do("GET", "/apiv1/me/acme-accounts", "", certToken), 403, "acme_accounts:read")
	e.want(e.do("GET", "/apiv1/admin/acme-providers", "", session), 403, "administrators")
	e.want(e.do("GET", "/apiv1/me/acme-accounts/abc", "", session), 400, "acme_account_id")
}

// TestEnablingAnUnregisteredAccountRegistersIt: an account disabled while
// pending comes back through registration, never active without a CA
// account.
func TestEnablingAnUnregisteredAccountRegistersIt(t *testing.T) {
	e := newACMEEnv(t)
	session, _ := e.registerActive("late@example.com")
	a := decode[acctView](t, e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"late@example.com"}`, session))
	path := fmt.Sprintf("/apiv1/me/acme-accounts/%d", a.ID)
	e.want(e.do("PUT", path, `{"status":"disabled"}`, session), 200, "")
	e.register() // skips: no longer pending
	r := e.do("PUT", path, `{"status":"active"}`, session)
	if got := decode[acctView](t, r); got.Status != "pending" || got.AccountURL != "" {
		t.Fatalf("enable of an unregistered account: %s", r.Body)
	}
	e.want(e.do("PUT", path, `{"is_default":true}`, session), 409, "only an active account")
	if n := e.register(); n != 1 {
		t.Fatalf("%d registrations queued, want 1", n)
	}
	if got := decode[acctView](t, e.do("GET", path, "", session)); got.Status != "active" || got.AccountURL == "" {
		t.Fatalf("after registration: %+v", got)
	}
}

func TestAdminAddsACustomCA(t *testing.T) {
	e := newACMEEnv(t)
	userSession, _ := e.registerActive("user@example.com")
	if _, err := e.ids.Register(context.Background(), identity.Registration{Email: "root@example.com", Password: goodPassword, Admin: true, Active: true}); err != nil {
		t.Fatal(err)
	}
	admin := sessionCookie(t, e.do("POST", "/auth/general", `{"action":"login","email":"root@example.com","password":"`+goodPassword+`"}`, ""))
	body := `{"name":"private-ca","title":"Our step-ca","directoryUrl":"` + e.pebble.DirectoryURL + `"}`
	e.want(e.do("POST", "/apiv1/admin/acme-providers", body, userSession), 403, "administrators")
	r := e.do("POST", "/apiv1/admin/acme-providers", body, admin)
	e.want(r, 201, "")
	p := decode[acmeacct.Provider](t, r)
	if p.ID <= 100 || p.Meta == nil || p.Meta.TermsOfService == "" {
		t.Fatalf("added provider: %s", r.Body)
	}
	e.want(e.do("POST", "/apiv1/admin/acme-providers", body, admin), 409, "already exists")
	e.want(e.do("POST", "/apiv1/admin/acme-providers", `{"name":"x","directoryUrl":"http://insecure.example/dir"}`, admin), 400, "")
	e.want(e.do("POST", "/apiv1/admin/acme-providers", `{"name":"dead-ca","directoryUrl":"https://127.0.0.1:1/dir"}`, admin), 400, "did not answer")
	list := decode[[]acmeacct.Provider](t, e.do("GET", "/apiv1/admin/acme-providers", "", admin))
	if len(list) != len(acmeacct.Builtins)+1 || list[len(list)-1].Name != "private-ca" {
		t.Fatalf("providers: %+v", list)
	}
	// Users register accounts with it like with any provider.
	a := decode[acctView](t, e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"private-ca","email":"user@example.com"}`, userSession))
	e.register()
	if got := decode[acctView](t, e.do("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", a.ID), "", userSession)); got.Status != "active" {
		t.Fatalf("account at the custom CA: %+v", got)
	}
}
