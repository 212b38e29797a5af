package certctrl_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/identity"
)

type createdKey struct {
	identity.APIKey
	Token string
}

func (e *env) createKey(session, path, body string) createdKey {
	e.t.Helper()
	r := e.do("POST", path, body, session)
	e.want(r, 201, "")
	var k createdKey
	if err := json.Unmarshal(r.Data, &k); err != nil {
		e.t.Fatal(err)
	}
	return k
}

const certReadAll = `{"name":"ci","permissions":[{"obtype":"certificates","obid":"*","actions":["read"]}]}`

func TestAPIKeyLifecycle(t *testing.T) {
	e := newEnv(t, 1000)
	session, uid := e.registerActive("owner@example.com")
	base := fmt.Sprintf("/apiv1/users/%d/apikeys", uid)

	k := e.createKey(session, base, certReadAll)
	if !strings.HasPrefix(k.Token, "ak_"+k.ID+"_") || len(k.ID) != 16 || k.UserID != uid {
		t.Fatalf("created key %+v", k)
	}
	// The token is shown once: never in a list or a get.
	list := e.do("GET", "/apiv1/me/apikeys", "", session)
	e.want(list, 200, "")
	get := e.do("GET", base+"/"+k.ID, "", session)
	e.want(get, 200, "")
	secret := k.Token[len("ak_")+17:]
	for _, r := range []reply{list, get} {
		if strings.Contains(r.Body, secret) || strings.Contains(r.Body, "secret") {
			t.Fatalf("key secret leaked: %s", r.Body)
		}
	}
	var keys []identity.APIKey
	json.Unmarshal(list.Data, &keys)
	if len(keys) != 1 || keys[0].ID != k.ID || keys[0].Permissions[0].ObType != "certificates" {
		t.Fatalf("list: %s", list.Body)
	}

	// The key authenticates as its user, and records its use.
	r := e.do("GET", "/auth/profile", "", k.Token)
	if r.Status != 200 || !strings.Contains(string(r.Data), `"id":`+fmt.Sprint(uid)) {
		t.Fatalf("profile by API key: %s", r.Body)
	}
	get = e.do("GET", base+"/"+k.ID, "", session)
	if !strings.Contains(get.Body, `"last_used_at":"`) {
		t.Fatalf("last_used_at not recorded: %s", get.Body)
	}
	// A key cannot manage keys.
	e.want(e.do("GET", "/apiv1/me/apikeys", "", k.Token), 403, "session")
	e.want(e.do("POST", "/apiv1/me/apikeys", certReadAll, k.Token), 403, "session")

	// PATCH replaces permissions, with the same validation as create.
	r = e.do("PATCH", base+"/"+k.ID, `{"permissions":[{"obtype":"acme_accounts","obid":"7","actions":["read","update"]}]}`, session)
	if r.Status != 200 || !strings.Contains(string(r.Data), `"obtype":"acme_accounts"`) {
		t.Fatalf("patch: %s", r.Body)
	}
	badPerms := []struct{ body, what, field string }{
		{`{"permissions":[]}`, "at least one", "permissions"},
		{`{"permissions":[{"obtype":"rockets","obid":"*","actions":["read"]}]}`, `unknown object type "rockets"`, "permissions[0].obtype"},
		{`{"permissions":[{"obtype":"certificates","obid":"*","actions":["fly"]}]}`, `"fly" is not an action`, "permissions[0].actions"},
		{`{"permissions":[{"obtype":"certificates","obid":"","actions":["read"]}]}`, "obid", "permissions[0].obid"},
	}
	for _, c := range badPerms {
		r := e.do("PATCH", base+"/"+k.ID, c.body, session)
		e.want(r, 400, c.what)
		if r.Error.Params["field"] != c.field {
			t.Errorf("%s: field %v, want %s", c.body, r.Error.Params["field"], c.field)
		}
	}
	e.want(e.do("POST", base, `{"permissions":[{"obtype":"certificates","obid":"*","actions":["read"]}]}`, session), 400, "name")

	// Delete revokes at once.
	e.want(e.do("DELETE", base+"/"+k.ID, "", session), 204, "")
	e.want(e.do("GET", "/auth/profile", "", k.Token), 401, "API key")
	e.want(e.do("GET", base+"/"+k.ID, "", session), 404, "not found")

	// Forged and malformed tokens.
	for _, tok := range []string{"ak_", "ak_0123456789abcdef_wrong", k.Token + "x", "ak_" + strings.Repeat("z", 200)} {
		e.want(e.do("GET", "/auth/profile", "", tok), 401, "API key")
	}
}

func TestAPIKeyExpires(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.registerActive("exp@example.com")
	expires := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	k := e.createKey(session, "/apiv1/me/apikeys",
		`{"name":"short","expires_at":"`+expires+`","permissions":[{"obtype":"devices","obid":"*","actions":["read"]}]}`)
	e.want(e.do("GET", "/auth/profile", "", k.Token), 200, "")
	time.Sleep(2600 * time.Millisecond)
	e.want(e.do("GET", "/auth/profile", "", k.Token), 401, "API key")
	e.want(e.do("POST", "/apiv1/me/apikeys",
		`{"name":"past","expires_at":"2020-01-01T00:00:00Z","permissions":[{"obtype":"devices","obid":"*","actions":["read"]}]}`, session), 400, "future")
}

func TestUsersAreIsolatedAndAdminsAreNot(t *testing.T) {
	e := newEnv(t, 1000)
	aSession, _ := e.registerActive("a@example.com")
	bSession, bID := e.registerActive("b@example.com")
	bKey := e.createKey(bSession, "/apiv1/me/apikeys", certReadAll)
	bBase := fmt.Sprintf("/apiv1/users/%d/apikeys", bID)

	e.want(e.do("GET", bBase, "", aSession), 403, "another user")
	e.want(e.do("GET", bBase+"/"+bKey.ID, "", aSession), 403, "another user")
	e.want(e.do("DELETE", bBase+"/"+bKey.ID, "", aSession), 403, "another user")
	// A's own user path cannot reach B's key either.
	e.want(e.do("GET", "/apiv1/me/apikeys/"+bKey.ID, "", aSession), 404, "not found")
	e.want(e.do("DELETE", "/apiv1/me/apikeys/"+bKey.ID, "", aSession), 404, "not found")
	e.want(e.do("GET", "/auth/profile", "", bKey.Token), 200, "")
	e.want(e.do("GET", "/apiv1/users/abc/apikeys", "", aSession), 400, "user_id")
	e.want(e.do("GET", "/apiv1/admin/users", "", aSession), 403, "administrators")

	admin, err := e.ids.Register(t.Context(), identity.Registration{Email: "root@example.com", Password: goodPassword, Admin: true, Active: true})
	if err != nil || !admin.IsAdmin() {
		t.Fatalf("admin: %+v %v", admin, err)
	}
	r := e.do("POST", "/auth/general", `{"action":"login","email":"root@example.com","password":"`+goodPassword+`"}`, "")
	adminSession := sessionCookie(t, r)
	r = e.do("GET", bBase, "", adminSession)
	if r.Status != 200 || !strings.Contains(string(r.Data), bKey.ID) {
		t.Fatalf("admin listing B's keys: %s", r.Body)
	}
	r = e.do("GET", "/apiv1/admin/users?limit=2", "", adminSession)
	var users []identity.User
	json.Unmarshal(r.Data, &users)
	if r.Status != 200 || len(users) != 2 || users[0].Email != "a@example.com" || r.Header.Get("X-Next-Cursor") == "" {
		t.Fatalf("admin users page 1: %s", r.Body)
	}
	r = e.do("GET", "/apiv1/admin/users?limit=2&cursor="+r.Header.Get("X-Next-Cursor"), "", adminSession)
	json.Unmarshal(r.Data, &users)
	if r.Status != 200 || len(users) != 1 || users[0].Email != "root@example.com" || r.Header.Get("X-Next-Cursor") != "" {
		t.Fatalf("admin users page 2: %s", r.Body)
	}
	e.want(e.do("GET", "/apiv1/admin/users?limit=0", "", adminSession), 400, "limit")
}

func TestRateLimitPerPrincipal(t *testing.T) {
	e := newEnv(t, 5)
	session, _ := e.registerActive("busy@example.com") // three anonymous requests from one address
	for i := range 7 {
		r := e.do("GET", "/auth/profile", "", session)
		switch {
		case i < 5 && r.Status != 200:
			t.Fatalf("request %d within the limit: %d %s", i, r.Status, r.Body)
		case i >= 5 && r.Status != 429:
			t.Fatalf("request %d over the limit: %d", i, r.Status)
		case i >= 5 && (r.Header.Get("Retry-After") == "" || r.Error.Params["retry_after"] == nil):
			t.Fatalf("429 without Retry-After: %v %s", r.Header, r.Body)
		}
	}
	// The address has its own window, with two requests left.
	e.want(e.do("GET", "/apiv1/permissions/catalog", "", ""), 200, "")
	e.want(e.do("GET", "/apiv1/permissions/catalog", "", ""), 200, "")
	e.want(e.do("GET", "/apiv1/permissions/catalog", "", ""), 429, "too many requests")
}

func TestPermissionCatalog(t *testing.T) {
	e := newEnv(t, 1000)
	r := e.do("GET", "/apiv1/permissions/catalog", "", "")
	e.want(r, 200, "")
	for _, name := range []string{`"acme_accounts"`, `"certificates"`, `"ForInstallConfigUpdate"`} {
		if !strings.Contains(string(r.Data), name) {
			t.Errorf("catalog lacks %s", name)
		}
	}
}
