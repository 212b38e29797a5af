package certctrl_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/issuance/records"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

type issueView struct {
	ID            int64    `json:"id"`
	CertificateID int64    `json:"certificate_id"`
	Names         []string `json:"names"`
	Status        string   `json:"status"`
	Step          string   `json:"step"`
	NotAfter      *string  `json:"not_after"`
}

// TestIssuesRoutes starts issues over HTTP (no worker runs here: the
// issue stays pending at its first step; shared/issuance's tests run the
// steps against Pebble).
func TestIssuesRoutes(t *testing.T) {
	e := newCertEnv(t)
	iss := issuance.New(e.parts.Store, e.parts.Sealer, e.parts.Queue, nil, nil, records.Certs{Certs: e.certs, ACME: e.svc}, issuance.Config{Log: e.parts.Log})
	guard := &httpapi.Guard{Auth: e.ids, Limiter: ratelimit.New(e.parts.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	e.Handler = httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: e.ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(e.svc, guard),
		certctrl.CertificatesGroup(e.certs, guard),
		certctrl.IssuesGroup(iss, guard)), e.parts.Log)

	session, uid := e.registerActive("owner@example.com")
	otherSession, _ := e.registerActive("other@example.com")
	acct := e.account(session, "ops@example.com")
	r := e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"a.example.com","sans":["b.example.com"],"acct_id":%d}`, acct), session)
	e.want(r, 201, "")
	certID := decode[certView](t, r).ID

	path := fmt.Sprintf("/apiv1/users/%d/certificates/%d/issues", uid, certID)
	r = e.do("POST", path, "", session)
	e.want(r, 202, "")
	is := decode[issueView](t, r)
	if is.ID == 0 || is.CertificateID != certID || is.Status != "pending" || is.Step != "order" || len(is.Names) != 2 || is.NotAfter != nil {
		t.Fatalf("started %s", r.Data)
	}
	// A repeated request returns the active issue, also through /me.
	r = e.do("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID), "", session)
	e.want(r, 202, "")
	if again := decode[issueView](t, r); again.ID != is.ID {
		t.Fatalf("second POST started issue %d, want the active %d", again.ID, is.ID)
	}
	r = e.do("GET", path, "", session)
	e.want(r, 200, "")
	if list := decode[[]issueView](t, r); len(list) != 1 || list[0].ID != is.ID {
		t.Fatalf("history %s", r.Data)
	}
	// Exactly one step message was queued.
	ds, err := e.parts.Queue.Receive(context.Background(), 10, 0)
	if err != nil || len(ds) != 1 || ds[0].Kind != issuance.KindPrefix+issuance.StepOrder {
		t.Fatalf("queued %+v, %v", ds, err)
	}

	e.want(e.do("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", certID+100), "", session), 404, "")
	if r := e.do("POST", path, "", otherSession); r.Status != 403 && r.Status != 404 {
		t.Fatalf("another user's certificate: %d %s", r.Status, r.Body)
	}
	e.want(e.do("POST", path, "", ""), 401, "")
}
