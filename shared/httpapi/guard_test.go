package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// TestAPIKeyScopes checks that a key reaches a scoped route only within its
// permissions: the object type, the action and the object id.
func TestAPIKeyScopes(t *testing.T) {
	ctx := context.Background()
	p := testenv.New(t)
	ids := p.Identity()
	g := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	ok := httpapi.Endpoint(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		return http.StatusOK, map[string]any{"target": httpapi.TargetUser(r.Context())}, nil
	})
	readCert := httpapi.Scope{ObType: "certificates", Action: "read", ObIDParam: "certificate_id"}
	group := httpapi.Group{Name: "scoped", Routes: []httpapi.Route{
		{Method: "GET", Path: "/apiv1/users/{user_id}/certificates/{certificate_id}", Handler: g.User(readCert, ok)},
		{Method: "GET", Path: "/apiv1/users/{user_id}/certificates", Handler: g.User(httpapi.Scope{ObType: "certificates", Action: "read"}, ok)},
		{Method: "DELETE", Path: "/apiv1/users/{user_id}/certificates/{certificate_id}", Handler: g.User(
			httpapi.Scope{ObType: "certificates", Action: "delete", ObIDParam: "certificate_id"}, ok)},
	}}
	c := testenv.Client{T: t, Handler: httpapi.Wrap(httpapi.NewRouter(group), p.Log)}

	u, err := ids.Register(ctx, identity.Registration{Email: "k@example.com", Password: "Scope1Test", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	key := func(perms ...identity.Permission) string {
		_, tok, err := ids.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "k", Permissions: perms})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cert10 := key(identity.Permission{ObType: "certificates", ObID: "10", Actions: []string{"read"}})
	allCerts := key(identity.Permission{ObType: "certificates", ObID: "*", Actions: []string{"read", "delete"}})
	devices := key(identity.Permission{ObType: "devices", ObID: "*", Actions: []string{"read", "delete"}})
	sess, err := ids.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	base := "/apiv1/users/" + strconv.FormatInt(u.ID, 10) + "/certificates"
	for _, c2 := range []struct {
		method, path, cred string
		status             int
	}{
		{"GET", base + "/10", cert10, 200},
		{"GET", base + "/11", cert10, 403},
		{"DELETE", base + "/10", cert10, 403},
		{"GET", base, cert10, 200}, // lists: the handler filters to granted ids
		{"GET", base + "/11", allCerts, 200},
		{"DELETE", base + "/11", allCerts, 200},
		{"GET", base + "/10", devices, 403},
		{"GET", base, devices, 403},
		{"DELETE", base + "/10", sess.Token, 200},
		{"GET", "/apiv1/users/999/certificates/10", allCerts, 403},
	} {
		r := c.Do(c2.method, c2.path, "", c2.cred)
		if r.Status != c2.status {
			t.Errorf("%s %s with %.12s: %d, want %d (%s)", c2.method, c2.path, c2.cred, r.Status, c2.status, r.Body)
		}
		if r.Status == 403 && c2.cred != sess.Token && r.Error.Code != 5022 {
			t.Errorf("403 envelope: %s", r.Body)
		}
	}
}
