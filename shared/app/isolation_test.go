package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// TestIsolationSweep walks every user-scoped route of every route group
// (found by its {user_id} parameter, so routes added later are swept
// without editing this test) with user A's session and A's all-powerful
// API key against user B's ids, every other route that names an object
// (the /apiv1/me/... aliases among them) with B's object ids, and every
// admin route with A's credentials. It counts responses that leaked B's data or succeeded, and
// changes to what B sees of B's own objects; the count must be 0.
func TestIsolationSweep(t *testing.T) {
	ctx := context.Background()
	cfg := localConfig(t, t.TempDir())
	cfg.RateLimit = 100000
	a, err := app.Local(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h := a.Handler()

	const marker = "b-private-marker"
	newUser := func(email string) (identity.User, string) {
		u, err := a.Identity.Register(ctx, identity.Registration{Email: email, Password: "Sweep1Password", Name: marker + "-" + email, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		_, sess, err := a.Identity.Login(ctx, email, "Sweep1Password", "192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		return u, sess.Token
	}
	userA, sessionA := newUser("a@example.com")
	userB, sessionB := newUser("b@example.com")
	var everything []identity.Permission
	for _, s := range identity.Catalog {
		everything = append(everything, identity.Permission{ObType: s.ObType, ObID: "*", Actions: s.Actions})
	}
	_, keyA, err := a.Identity.CreateAPIKey(ctx, userA.ID, identity.NewAPIKey{Name: "a-all", Permissions: everything})
	if err != nil {
		t.Fatal(err)
	}
	keyB, _, err := a.Identity.CreateAPIKey(ctx, userB.ID, identity.NewAPIKey{Name: marker, Permissions: everything})
	if err != nil {
		t.Fatal(err)
	}
	// B's object ids by path parameter; a parameter not listed gets "1".
	bIDs := map[string]string{httpapi.UserPathParam: fmt.Sprint(userB.ID), "apikey_id": keyB.ID}

	param := regexp.MustCompile(`\{([a-z_]+)\.{0,3}\}`)
	fill := func(path string) string {
		return param.ReplaceAllStringFunc(path, func(m string) string {
			if id, ok := bIDs[param.FindStringSubmatch(m)[1]]; ok {
				return id
			}
			return "1"
		})
	}
	call := func(method, path, cred string) *httptest.ResponseRecorder {
		var body *strings.Reader
		if method == "POST" || method == "PUT" || method == "PATCH" {
			body = strings.NewReader(`{"name":"sweep","permissions":[{"obtype":"certificates","obid":"*","actions":["read"]}]}`)
		} else {
			body = strings.NewReader("")
		}
		req := httptest.NewRequest(method, path, body)
		if strings.HasPrefix(cred, "ak_") {
			req.Header.Set("Authorization", "Bearer "+cred)
		} else {
			req.AddCookie(&http.Cookie{Name: cfg.SessionCookie, Value: cred})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// What B sees through every user-scoped GET, as B.
	var userRoutes, objectRoutes, adminRoutes []httpapi.Route
	for _, g := range a.Groups() {
		for _, r := range g.Routes {
			switch {
			case strings.HasPrefix(r.Path, "/apiv1/admin/"):
				adminRoutes = append(adminRoutes, r)
			case strings.Contains(r.Path, "{"+httpapi.UserPathParam+"}"):
				userRoutes = append(userRoutes, r)
			case strings.Contains(r.Path, "{"):
				objectRoutes = append(objectRoutes, r)
			}
		}
	}
	snapshot := func() map[string]string {
		seen := map[string]string{}
		for _, r := range userRoutes {
			if r.Method == "GET" {
				rec := call("GET", fill(r.Path), sessionB)
				seen[r.Path] = fmt.Sprint(rec.Code, " ", rec.Body.String())
			}
		}
		return seen
	}
	before := snapshot()

	leaks, calls := 0, 0
	for _, r := range append(slices.Clone(userRoutes), objectRoutes...) {
		for _, cred := range []string{sessionA, keyA} {
			path := fill(r.Path)
			rec := call(r.Method, path, cred)
			calls++
			if rec.Code < 400 || strings.Contains(rec.Body.String(), marker) || strings.Contains(rec.Body.String(), "b@example.com") {
				leaks++
				t.Errorf("%s %s as A (%s): %d %s", r.Method, path, cred[:3], rec.Code, rec.Body)
			}
		}
	}
	for _, r := range adminRoutes {
		for _, cred := range []string{sessionA, keyA} {
			rec := call(r.Method, fill(r.Path), cred)
			calls++
			if rec.Code != http.StatusForbidden && rec.Code != http.StatusUnauthorized {
				leaks++
				t.Errorf("%s %s as non-admin A: %d %s", r.Method, r.Path, rec.Code, rec.Body)
			}
		}
	}
	after := snapshot()
	for path, was := range before {
		if after[path] != was {
			leaks++
			t.Errorf("B's view of %s changed during the sweep:\nbefore %s\nafter  %s", path, was, after[path])
		}
	}
	t.Logf("isolation sweep: %d user-scoped, %d other object and %d admin routes, %d calls, %d leaks or changes",
		len(userRoutes), len(objectRoutes), len(adminRoutes), calls, leaks)
	if len(userRoutes) < 5 || len(before) < 2 {
		t.Fatalf("the sweep found only %d user-scoped routes (%d GETs): is the route discovery broken?", len(userRoutes), len(before))
	}
	if !strings.Contains(before["/apiv1/users/{user_id}/apikeys"], marker) {
		t.Fatalf("B's own view does not show B's key, so the sweep cannot see a leak: %s", before["/apiv1/users/{user_id}/apikeys"])
	}
}
