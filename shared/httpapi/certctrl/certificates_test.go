package certctrl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// certEnv is acmeEnv with the certificate route group (certificates and
// DNS providers) mounted too.
type certEnv struct {
	*acmeEnv
	certs *certs.Service
	dns   *dnsprov.Service
}

// delegationZone is the env's CERTFLEET_DELEGATION_ZONE.
const delegationZone = "acme.certfleet.test"

func newCertEnv(t *testing.T) *certEnv {
	t.Helper()
	e := newACMEEnv(t)
	dns := dnsprov.New(e.parts.Store, e.parts.Sealer, dnsprov.Config{Now: e.parts.Clock.Now, Log: e.parts.Log})
	svc := certs.New(e.parts.Store, e.svc, certs.Config{Providers: dns, DelegationZone: delegationZone, Now: e.parts.Clock.Now, Log: e.parts.Log})
	guard := &httpapi.Guard{Auth: e.ids, Limiter: ratelimit.New(e.parts.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	group := certctrl.CertificatesGroup(svc, guard)
	group.Routes = append(group.Routes, certctrl.DNSProviderRoutes(dns, guard)...)
	e.Handler = httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: e.ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(e.svc, guard), group), e.parts.Log)
	return &certEnv{acmeEnv: e, certs: svc, dns: dns}
}

// account creates an ACME account with the session and registers it.
func (e *certEnv) account(session, email string) int64 {
	e.t.Helper()
	r := e.do("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"`+email+`"}`, session)
	e.want(r, 201, "")
	e.register()
	return decode[acctView](e.t, r).ID
}

// wantField is want for a 400 that names field.
func (e *certEnv) wantField(r reply, status int, field, whatContains string) {
	e.t.Helper()
	e.want(r, status, whatContains)
	if r.Error.Params["field"] != field {
		e.t.Fatalf("params.field = %v, want %s: %s", r.Error.Params["field"], field, r.Body)
	}
}

type certView struct {
	ID            int64    `json:"id"`
	UserID        int64    `json:"user_id"`
	DomainName    string   `json:"domain_name"`
	SANs          []string `json:"sans"`
	AcctID        int64    `json:"acct_id"`
	KeyAlgorithm  string   `json:"key_algorithm"`
	KeySize       int      `json:"key_size"`
	Policy        string   `json:"policy"`
	KeyDistPolicy string   `json:"key_dist_policy"`
	ChallengeType string   `json:"challenge_type"`
	Validation    struct {
		Method        string `json:"method"`
		DNSProviderID int64  `json:"dns_provider_id"`
		Delegation    []struct {
			Name  string `json:"name"`
			CNAME string `json:"cname"`
		} `json:"delegation"`
	}
	ServerDecryptExport bool    `json:"server_decrypt_export"`
	Status              string  `json:"status"`
	RenewAt             *string `json:"renew_at"`
	NotAfter            *string `json:"not_after"`
	CreatedAt           string  `json:"created_at"`
}

func certIDs(t *testing.T, r reply) []int64 {
	t.Helper()
	var ids []int64
	for _, c := range decode[[]certView](t, r) {
		ids = append(ids, c.ID)
	}
	return ids
}

// seedBody is seed 000's create example, verbatim.
const seedBody = `{
"domain_name": "example.com",
"sans": ["example.com", "www.example.com"],
"acct_id": 7,
"action": "create",
"key_algorithm": "ECDSA",
"policy": "HYBRID"
}`

// TestCertificatesSeedExample posts seed 000's example as written: user 1,
// ACME account 7.
func TestCertificatesSeedExample(t *testing.T) {
	e := newCertEnv(t)
	session, uid := e.registerActive("owner@example.com")
	otherSession, other := e.registerActive("other@example.com")
	if uid != 1 || other != 2 {
		t.Fatalf("users %d and %d", uid, other)
	}
	for i := 1; i <= 6; i++ { // accounts 1-6 are the other user's
		e.account(otherSession, fmt.Sprintf("o%d@example.com", i))
	}
	if id := e.account(session, "ops@example.com"); id != 7 {
		t.Fatalf("account %d, want 7", id)
	}

	r := e.do("POST", "/apiv1/users/1/certificates", seedBody, session)
	e.want(r, 201, "")
	var raw map[string]any
	if err := json.Unmarshal(r.Data, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "user_id", "domain_name", "sans", "acct_id", "key_algorithm", "key_size", "policy",
		"key_dist_policy", "challenge_type", "validation", "server_decrypt_export", "status", "renew_at", "not_after",
		"created_at", "updated_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("no %q in %s", k, r.Data)
		}
	}
	if len(raw) != 17 || strings.Contains(strings.ToLower(r.Body), "private") {
		t.Errorf("unexpected fields in %s", r.Data)
	}
	c := decode[certView](t, r)
	if c.ID != 1 || c.UserID != 1 || c.DomainName != "example.com" || !slices.Equal(c.SANs, []string{"example.com", "www.example.com"}) ||
		c.AcctID != 7 || c.KeyAlgorithm != "ECDSA" || c.KeySize != 256 || c.Policy != "HYBRID" || c.KeyDistPolicy != "HYBRID" ||
		c.ChallengeType != "http-01" || c.Validation.Method != "http-01" || c.ServerDecryptExport || c.Status != "new" ||
		c.RenewAt != nil || c.NotAfter != nil || c.CreatedAt == "" {
		t.Fatalf("created %s", r.Data)
	}
	if loc := r.Header.Get("Location"); loc != "/apiv1/users/1/certificates/1" {
		t.Errorf("Location %q", loc)
	}

	// Read it back through every path.
	for _, path := range []string{"/apiv1/users/1/certificates/1", "/apiv1/me/certificates/1"} {
		if got := decode[certView](t, e.do("GET", path, "", session)); got.ID != 1 || got.DomainName != "example.com" {
			t.Fatalf("GET %s: %+v", path, got)
		}
	}
	for _, path := range []string{"/apiv1/users/1/certificates", "/apiv1/me/certificates",
		"/apiv1/users/1/acme-accounts/7/certificates", "/apiv1/me/acme-accounts/7/certificates"} {
		r := e.do("GET", path, "", session)
		if ids := certIDs(t, r); !slices.Equal(ids, []int64{1}) || r.Header.Get("X-Total-Count") != "1" {
			t.Fatalf("GET %s: %s (total %s)", path, r.Body, r.Header.Get("X-Total-Count"))
		}
	}
	// The other user sees none of it.
	e.want(e.do("GET", "/apiv1/users/1/certificates/1", "", otherSession), 403, "another user")
	e.want(e.do("GET", "/apiv1/me/certificates/1", "", otherSession), 404, "certificate 1 not found")
	e.want(e.do("GET", "/apiv1/me/acme-accounts/7/certificates", "", otherSession), 404, "ACME account 7 not found")
	if r := e.do("GET", "/apiv1/me/certificates", "", otherSession); r.Header.Get("X-Total-Count") != "0" || string(r.Data) != "[]" {
		t.Fatalf("other user's list: %s", r.Body)
	}
	e.want(e.do("DELETE", "/apiv1/me/certificates/1", "", otherSession), 404, "")

	// Update what may change; the record follows.
	r = e.do("PUT", "/apiv1/me/certificates/1", `{"policy":"MASTER_ONLY","server_decrypt_export":true,"sans":["example.com","www.example.com","api.example.com"]}`, session)
	e.want(r, 200, "")
	if u := decode[certView](t, r); u.Policy != "MASTER_ONLY" || !u.ServerDecryptExport || len(u.SANs) != 3 {
		t.Fatalf("updated %s", r.Data)
	}
	e.wantField(e.do("PUT", "/apiv1/me/certificates/1", `{"policy":"DEVICE_REQUIRED"}`, session), 400, "policy", "never allows server-decrypted export")
	e.wantField(e.do("PUT", "/apiv1/me/certificates/1", `{"acct_id":1}`, session), 400, "acct_id", "ACME account 1 is not one of your accounts")

	// The ACME account cannot go while the certificate uses it.
	e.want(e.do("DELETE", "/apiv1/me/acme-accounts/7", "", session), 409, acmeacct.MsgRefCerts)
	e.want(e.do("DELETE", "/apiv1/users/1/certificates/1", "", session), 204, "")
	e.want(e.do("GET", "/apiv1/me/certificates/1", "", session), 404, "not found")
	e.want(e.do("DELETE", "/apiv1/me/certificates/1", "", session), 404, "not found")
	e.want(e.do("DELETE", "/apiv1/me/acme-accounts/7", "", session), 204, "")
}

func TestCertificateBadInputs(t *testing.T) {
	e := newCertEnv(t)
	otherSession, _ := e.registerActive("other@example.com")
	theirs := e.account(otherSession, "theirs@example.com")
	session, _ := e.registerActive("me@example.com")
	acct := e.account(session, "mine@example.com")
	off := e.account(session, "off@example.com")
	e.want(e.do("PUT", fmt.Sprintf("/apiv1/me/acme-accounts/%d", off), `{"status":"disabled"}`, session), 200, "")

	// body builds a create body from the seed's with fields replaced.
	body := func(kv ...any) string {
		m := map[string]any{"domain_name": "example.com", "sans": []string{"example.com", "www.example.com"},
			"acct_id": acct, "action": "create", "key_algorithm": "ECDSA", "policy": "HYBRID"}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	var names []string
	for i := range 101 {
		names = append(names, fmt.Sprintf("h%d.example.com", i))
	}
	for _, c := range []struct {
		body, field, what string
	}{
		{body("action", "issue"), "action", `unknown action "issue"`},
		{body("action", 1), "action", `field "action" must be a string`},
		{body("domain_name", nil, "sans", nil), "domain_name", "required"},
		{body("domain_name", 5), "domain_name", "must be a string"},
		{body("sans", "example.com"), "sans", "must be an array"},
		{body("acct_id", nil), "acct_id", "required"},
		{body("acct_id", "7"), "acct_id", "must be a number"},
		{body("acct_id", theirs), "acct_id", fmt.Sprintf("ACME account %d is not one of your accounts", theirs)},
		{body("acct_id", 4242), "acct_id", "ACME account 4242 is not one of your accounts"},
		{body("acct_id", off), "acct_id", "is disabled"},
		{body("sans", []string{"example.com", "*.example.com"}), "sans[1]", `"*.example.com" is a wildcard name, which needs DNS-01`},
		{body("sans", []string{"example.com", "www.*.example.com"}, "challenge_type", "dns-01"), "sans[1]", "leftmost label"},
		{body("sans", names), "sans", "101 names"},
		{body("sans", []string{strings.Repeat("x", 64) + ".example.com"}), "sans[0]", "label of 64 characters"},
		{body("domain_name", strings.Repeat(strings.Repeat("a", 62)+".", 4)+"co"), "domain_name", "254 characters"},
		{body("sans", []string{"example.com", "192.0.2.10"}), "sans[1]", `"192.0.2.10" is an IP address`},
		{body("sans", []string{"example.com", "Example.COM"}), "sans[1]", `"Example.COM" is the same name as sans[0] "example.com"`},
		{body("sans", []string{"example.com", ""}), "sans[1]", "empty"},
		{body("domain_name", "ex ample.com"), "domain_name", `"ex ample.com" is not a valid domain name`},
		{body("key_algorithm", "ED25519"), "key_algorithm", `"ED25519"`},
		{body("key_size", 512), "key_size", "ECDSA keys are 256, 384 bits, not 512"},
		{body("key_algorithm", "RSA", "key_size", 1024), "key_size", "RSA keys are 2048, 3072, 4096 bits"},
		{body("policy", "ANYONE"), "policy", `must be one of HYBRID, MASTER_ONLY, DEVICE_REQUIRED, not "ANYONE"`},
		{body("policy", "HYBRID", "key_dist_policy", "MASTER_ONLY"), "key_dist_policy", "differs from policy"},
		{body("policy", "DEVICE_REQUIRED", "server_decrypt_export", true), "server_decrypt_export", "never allows server-decrypted export"},
		{body("challenge_type", "dns-1"), "challenge_type", `"dns-1"`},
		{body("validation", map[string]string{"method": "email"}), "validation.method", `"email"`},
		{body("validation", map[string]string{}), "validation.method", "required"},
		{body("validation", map[string]any{"method": "dns-01-provider"}), "validation.dns_provider_id", "is required with dns-01-provider"},
		{body("validation", map[string]any{"method": "dns-01-provider", "dns_provider_id": "1"}), "validation.dns_provider_id", "must be a number"},
		{body("validation", map[string]any{"method": "dns-01-provider", "dns_provider_id": 4242}), "validation.dns_provider_id", "DNS provider 4242 is not one of your DNS providers"},
		{body("validation", map[string]any{"method": "http-01", "dns_provider_id": 1}), "validation.dns_provider_id", "only for dns-01-provider"},
		{body("challenge_type", "tls-alpn-01", "validation", map[string]string{"method": "dns-01-delegation"}), "validation.method", "challenge_type is tls-alpn-01"},
	} {
		r := e.do("POST", "/apiv1/me/certificates", c.body, session)
		e.wantField(r, 400, c.field, c.what)
	}
	e.want(e.do("POST", "/apiv1/me/certificates", `{"domain_name":`, session), 400, "")
	e.want(e.do("POST", "/apiv1/me/certificates", ``, session), 400, "empty")
	if r := e.do("GET", "/apiv1/me/certificates", "", session); r.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("refused creates left certificates: %s", r.Body)
	}

	// Paths, queries and updates.
	e.wantField(e.do("GET", "/apiv1/me/certificates/abc", "", session), 400, "certificate_id", "positive integer")
	e.wantField(e.do("DELETE", "/apiv1/me/certificates/0", "", session), 400, "certificate_id", "positive integer")
	e.want(e.do("GET", "/apiv1/me/certificates/999", "", session), 404, "certificate 999 not found")
	e.wantField(e.do("GET", "/apiv1/me/certificates?limit=0", "", session), 400, "limit", "1 to 1000")
	e.wantField(e.do("GET", "/apiv1/me/certificates?offset=-1", "", session), 400, "offset", "0 or more")
	e.wantField(e.do("GET", "/apiv1/me/acme-accounts/x/certificates", "", session), 400, "acme_account_id", "positive integer")
	e.want(e.do("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d/certificates", theirs), "", session), 404, "not found")
	e.want(e.do("GET", "/apiv1/me/certificates", "", ""), 401, "")

	e.want(e.do("POST", "/apiv1/me/certificates", body("domain_name", "bücher.example", "sans", nil), session), 201, "")
	r := e.do("GET", "/apiv1/me/certificates", "", session)
	id := certIDs(t, r)[0]
	if c := decode[[]certView](t, r)[0]; c.DomainName != "xn--bcher-kva.example" || !slices.Equal(c.SANs, []string{"xn--bcher-kva.example"}) {
		t.Fatalf("IDNA name: %+v", c)
	}
	path := fmt.Sprintf("/apiv1/me/certificates/%d", id)
	e.want(e.do("PUT", path, `{}`, session), 400, "nothing to change")
	e.wantField(e.do("PUT", path, `{"acct_id":`+fmt.Sprint(theirs)+`}`, session), 400, "acct_id", "not one of your accounts")
	e.wantField(e.do("PUT", path, `{"acct_id":`+fmt.Sprint(off)+`}`, session), 400, "acct_id", "is disabled")
	e.wantField(e.do("PUT", path, `{"sans":["*.bücher.example"]}`, session), 400, "sans[0]", "needs DNS-01")
	e.wantField(e.do("PUT", path, `{"sans":["*.bücher.example"],"challenge_type":"dns-01"}`, session), 400,
		"validation.dns_provider_id", "is required with dns-01-provider")
	dns := e.dnsProvider(session)
	r = e.do("PUT", path, fmt.Sprintf(`{"sans":["*.bücher.example"],"challenge_type":"dns-01","validation":{"dns_provider_id":%d}}`, dns), session)
	e.want(r, 200, "")
	if c := decode[certView](t, r); c.DomainName != "*.xn--bcher-kva.example" || c.Validation.Method != "dns-01-provider" ||
		c.Validation.DNSProviderID != dns {
		t.Fatalf("wildcard update: %s", r.Data)
	}
	e.want(e.do("PUT", "/apiv1/me/certificates/999", `{"policy":"HYBRID"}`, session), 404, "not found")
}

// TestCertificateKeyScopes: API keys reach certificates only as granted,
// one certificate id at a time when the grant names one.
func TestCertificateKeyScopes(t *testing.T) {
	e := newCertEnv(t)
	session, uid := e.registerActive("keys@example.com")
	acct := e.account(session, "k@example.com")
	for i := 1; i <= 11; i++ {
		r := e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"action":"create","domain_name":"h%d.example.com","acct_id":%d}`, i, acct), session)
		e.want(r, 201, "")
		if id := decode[certView](t, r).ID; id != int64(i) {
			t.Fatalf("certificate id %d, want %d", id, i)
		}
	}
	key := func(perms ...identity.Permission) string {
		_, token, err := e.ids.CreateAPIKey(context.Background(), uid, identity.NewAPIKey{Name: "k", Permissions: perms})
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	read10 := key(identity.Permission{ObType: "certificates", ObID: "10", Actions: []string{"read"}})
	e.want(e.do("GET", "/apiv1/me/certificates/10", "", read10), 200, "")
	e.want(e.do("GET", fmt.Sprintf("/apiv1/users/%d/certificates/10", uid), "", read10), 200, "")
	e.want(e.do("GET", "/apiv1/me/certificates/11", "", read10), 403, "certificates:read")
	for _, path := range []string{"/apiv1/me/certificates", fmt.Sprintf("/apiv1/me/acme-accounts/%d/certificates", acct)} {
		r := e.do("GET", path, "", read10)
		if ids := certIDs(t, r); !slices.Equal(ids, []int64{10}) || r.Header.Get("X-Total-Count") != "1" {
			t.Fatalf("%s with a key for 10: %s", path, r.Body)
		}
	}
	e.want(e.do("PUT", "/apiv1/me/certificates/10", `{"policy":"MASTER_ONLY"}`, read10), 403, "certificates:update")
	e.want(e.do("DELETE", "/apiv1/me/certificates/10", "", read10), 403, "certificates:delete")
	e.want(e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"n.example.com","acct_id":%d}`, acct), read10), 403, "certificates:create")
	e.want(e.do("GET", "/apiv1/me/acme-accounts", "", read10), 403, "acme_accounts:read")

	acmeOnly := key(identity.Permission{ObType: "acme_accounts", ObID: "*", Actions: []string{"read"}})
	e.want(e.do("GET", "/apiv1/me/certificates", "", acmeOnly), 403, "certificates:read")
	e.want(e.do("GET", "/apiv1/me/certificates/1", "", acmeOnly), 403, "certificates:read")

	all := key(identity.Permission{ObType: "certificates", ObID: "*", Actions: []string{"read", "create", "update", "delete"}})
	r := e.do("GET", "/apiv1/me/certificates?offset=8&limit=2", "", all)
	if ids := certIDs(t, r); !slices.Equal(ids, []int64{9, 10}) || r.Header.Get("X-Total-Count") != "11" {
		t.Fatalf("page with a key for all: %s", r.Body)
	}
	e.want(e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"n.example.com","acct_id":%d}`, acct), all), 201, "")
	e.want(e.do("PUT", "/apiv1/me/certificates/11", `{"policy":"MASTER_ONLY"}`, all), 200, "")
	e.want(e.do("DELETE", "/apiv1/me/certificates/11", "", all), 204, "")
	e.want(e.do("GET", "/apiv1/me/certificates/11", "", all), 404, "not found")

	// A key for one certificate may update and delete that one only.
	own9 := key(identity.Permission{ObType: "certificates", ObID: "9", Actions: []string{"update", "delete"}})
	e.want(e.do("PUT", "/apiv1/me/certificates/8", `{"policy":"MASTER_ONLY"}`, own9), 403, "certificates:update")
	e.want(e.do("PUT", "/apiv1/me/certificates/9", `{"policy":"MASTER_ONLY"}`, own9), 200, "")
	e.want(e.do("GET", "/apiv1/me/certificates", "", own9), 403, "certificates:read")
	e.want(e.do("DELETE", "/apiv1/me/certificates/9", "", own9), 204, "")
}

// dnsProvider stores cloudflare credentials with the session and returns
// their id.
func (e *certEnv) dnsProvider(session string) int64 {
	e.t.Helper()
	r := e.do("POST", "/apiv1/me/dns-providers", `{"name":"cf","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"tok"}}`, session)
	e.want(r, 201, "")
	return decode[dnsProviderView](e.t, r).ID
}

// TestCertificateValidationSettings: dns-01-provider shows its DNS
// provider, dns-01-delegation the CNAMEs its owner must add.
func TestCertificateValidationSettings(t *testing.T) {
	e := newCertEnv(t)
	session, uid := e.registerActive("v@example.com")
	otherSession, _ := e.registerActive("w@example.com")
	acct := e.account(session, "v-acme@example.com")
	dns, theirs := e.dnsProvider(session), e.dnsProvider(otherSession)

	r := e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"*.p.example","sans":["p.example"],"acct_id":%d,`+
		`"validation":{"method":"dns-01-provider","dns_provider_id":%d}}`, acct, dns), session)
	e.want(r, 201, "")
	c := decode[certView](t, r)
	if c.ChallengeType != "dns-01" || c.Validation.Method != "dns-01-provider" || c.Validation.DNSProviderID != dns || c.Validation.Delegation != nil {
		t.Fatalf("provider certificate: %s", r.Data)
	}
	path := fmt.Sprintf("/apiv1/me/certificates/%d", c.ID)
	e.wantField(e.do("PUT", path, fmt.Sprintf(`{"validation":{"dns_provider_id":%d}}`, theirs), session), 400,
		"validation.dns_provider_id", "is not one of your DNS providers")

	// To delegation: the provider goes, the CNAMEs come, one per domain.
	r = e.do("PUT", path, `{"validation":{"method":"dns-01-delegation"}}`, session)
	e.want(r, 200, "")
	c = decode[certView](t, r)
	if c.Validation.DNSProviderID != 0 || len(c.Validation.Delegation) != 1 ||
		c.Validation.Delegation[0].Name != "_acme-challenge.p.example" ||
		c.Validation.Delegation[0].CNAME != certs.DelegationTarget(delegationZone, uid, "p.example") {
		t.Fatalf("delegation certificate: %s", r.Data)
	}
	if !strings.Contains(r.Body, `"delegation":[{"name":"_acme-challenge.p.example","cname":"_acme-challenge.`) {
		t.Fatalf("delegation JSON: %s", r.Body)
	}
	r = e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"sans":["a.example","*.b.example","b.example","c.a.example"],"acct_id":%d,`+
		`"validation":{"method":"dns-01-delegation"}}`, acct), session)
	e.want(r, 201, "")
	var names []string
	for _, d := range decode[certView](t, r).Validation.Delegation {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, []string{"_acme-challenge.a.example", "_acme-challenge.b.example", "_acme-challenge.c.a.example"}) {
		t.Fatalf("delegation names: %v", names)
	}
	// Listings show the same.
	r = e.do("GET", "/apiv1/me/certificates", "", session)
	if list := decode[[]certView](t, r); len(list) != 2 || len(list[0].Validation.Delegation) != 1 || len(list[1].Validation.Delegation) != 3 {
		t.Fatalf("list: %s", r.Data)
	}
}

// TestDelegationOffWithoutZone: without CERTFLEET_DELEGATION_ZONE the
// route refuses dns-01-delegation with the reason.
func TestDelegationOffWithoutZone(t *testing.T) {
	e := newCertEnv(t)
	svc := certs.New(e.parts.Store, e.svc, certs.Config{Providers: e.dns, Log: e.parts.Log})
	guard := &httpapi.Guard{Auth: e.ids, Limiter: ratelimit.New(e.parts.Store, "requests", 1000, time.Minute, nil), CookieName: "cjj365"}
	e.Handler = httpapi.Wrap(httpapi.NewRouter(
		certctrl.AuthGroup(certctrl.AuthDeps{Identity: e.ids, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}}),
		certctrl.AcmeAccountsGroup(e.svc, guard), certctrl.CertificatesGroup(svc, guard)), e.parts.Log)
	session, _ := e.registerActive("z@example.com")
	acct := e.account(session, "z-acme@example.com")
	e.wantField(e.do("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"z.example","acct_id":%d,"validation":{"method":"dns-01-delegation"}}`, acct), session),
		400, "validation.method", "dns-01-delegation is not enabled on this server: CERTFLEET_DELEGATION_ZONE is not set")
}
