package certctrl_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/issuance/records"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// TestWorkerRoutes: the internal routes take the worker token and nothing
// else, and serve answers through the HTTP-01 responder.
func TestWorkerRoutes(t *testing.T) {
	e := newCertEnv(t)
	iss := issuance.New(e.parts.Store, e.parts.Sealer, e.parts.Queue, nil, nil, records.Certs{Certs: e.certs, ACME: e.svc}, issuance.Config{Log: e.parts.Log})
	guard := &httpapi.Guard{Auth: e.ids, Limiter: ratelimit.New(e.parts.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	e.Handler = httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: e.ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		httpapi.Group{Name: "worker", Routes: certctrl.WorkerRoutes(iss, guard)},
		httpapi.ChallengeGroup(iss)), e.parts.Log)
	worker, err := e.ids.WorkerToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.ids.WorkerToken(context.Background())
	if err != nil || again != worker {
		t.Fatalf("a second WorkerToken = %q, %v; want the same token", again, err)
	}
	session, uid := e.registerActive("owner@example.com")

	start := "/apiv1/internal/certificates/1/challenges/http01/start"
	body := `{"token":"tok_0123456789abcdef","key_authorization":"tok_0123456789abcdef.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"}`
	e.want(e.do("POST", start, body, ""), 401, "")
	e.want(e.do("POST", start, body, session), 403, "")
	e.want(e.do("POST", start, body, "cfw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 401, "")
	e.wantField(e.do("POST", start, `{"token":"x"}`, worker), 400, "token", "")
	e.want(e.do("POST", start, body, worker), 204, "")
	served := func() (int, string) {
		rec := httptest.NewRecorder()
		e.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/acme-challenge/tok_0123456789abcdef", nil))
		return rec.Code, rec.Body.String()
	}
	if code, got := served(); code != 200 || got != "tok_0123456789abcdef.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq" {
		t.Fatalf("responder after start: %d %q", code, got)
	}
	e.want(e.do("POST", "/apiv1/internal/certificates/1/challenges/http01/stop", `{"token":"tok_0123456789abcdef"}`, worker), 204, "")
	if code, _ := served(); code != 404 {
		t.Fatalf("responder after stop: %d", code)
	}
	e.wantField(e.do("POST", "/apiv1/internal/certificates/1/challenges/tlsalpn01/start", `{"domain":"UPPER..bad"}`, worker), 400, "domain", "")

	result := fmt.Sprintf("/apiv1/users/%d/certificates/1/issue-result", uid)
	e.want(e.do("PUT", result, `{"issue_id":1,"status":"failed","error":"x"}`, session), 403, "")
	e.wantField(e.do("PUT", result, `{"status":"failed","error":"x"}`, worker), 400, "issue_id", "")
	e.wantField(e.do("PUT", result, `{"issue_id":1,"status":"maybe"}`, worker), 400, "status", "")
	e.want(e.do("PUT", result, `{"issue_id":1,"status":"failed","error":"x"}`, worker), 404, "")
}
