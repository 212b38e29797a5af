package certctrl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/identity"
)

type dnsProviderView struct {
	ID          int64    `json:"id"`
	UserID      int64    `json:"user_id"`
	Name        string   `json:"name"`
	Provider    string   `json:"provider"`
	SettingKeys []string `json:"setting_keys"`
	CreatedAt   string   `json:"created_at"`
	UpdatedAt   string   `json:"updated_at"`
}

func TestDNSProviderCatalogIsPublic(t *testing.T) {
	e := newCertEnv(t)
	r := e.do("GET", "/apiv1/dns/providers/catalog", "", "")
	e.want(r, 200, "")
	var cat []struct {
		Code, Name, URL string
		Credentials     []struct{ Env, Description string }
		Additional      []struct{ Env, Description string }
		Required        [][]string
	}
	if err := json.Unmarshal(r.Data, &cat); err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	for i, p := range cat {
		codes[p.Code] = i
	}
	if len(cat) < 150 {
		t.Fatalf("%d providers", len(cat))
	}
	for _, gone := range []string{"exec", "manual"} {
		if _, ok := codes[gone]; ok {
			t.Errorf("the catalog offers %s", gone)
		}
	}
	cf := cat[codes["cloudflare"]]
	if cf.Name != "Cloudflare" || cf.URL == "" || len(cf.Required) != 2 || !slices.Equal(cf.Required[0], []string{"CF_DNS_API_TOKEN"}) ||
		!slices.ContainsFunc(cf.Credentials, func(s struct{ Env, Description string }) bool { return s.Env == "CF_DNS_API_TOKEN" }) ||
		!slices.ContainsFunc(cf.Additional, func(s struct{ Env, Description string }) bool { return s.Env == "CLOUDFLARE_TTL" }) {
		t.Fatalf("cloudflare: %+v", cf)
	}
	if strings.Contains(r.Body, "_FILE\"") {
		t.Fatal("the catalog offers a _FILE setting")
	}
}

const cfToken = "cf-route-secret-5f1c"

func TestDNSProviderRoutes(t *testing.T) {
	e := newCertEnv(t)
	session, uid := e.registerActive("dns@example.com")
	otherSession, _ := e.registerActive("other@example.com")
	var bodies []string
	do := func(method, path, body, cred string) reply {
		t.Helper()
		r := e.do(method, path, body, cred)
		bodies = append(bodies, r.Body)
		return r
	}

	r := do("POST", fmt.Sprintf("/apiv1/users/%d/dns-providers", uid),
		`{"name":"Main","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"`+cfToken+`","CLOUDFLARE_TTL":"120"}}`, session)
	e.want(r, 201, "")
	var raw map[string]any
	if err := json.Unmarshal(r.Data, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 7 {
		t.Fatalf("fields of %s", r.Data)
	}
	p := decode[dnsProviderView](t, r)
	if p.ID != 1 || p.UserID != uid || p.Name != "Main" || p.Provider != "cloudflare" ||
		!slices.Equal(p.SettingKeys, []string{"CF_DNS_API_TOKEN", "CLOUDFLARE_TTL"}) || p.CreatedAt == "" {
		t.Fatalf("created %s", r.Data)
	}
	if loc := r.Header.Get("Location"); loc != fmt.Sprintf("/apiv1/users/%d/dns-providers/1", uid) {
		t.Errorf("Location %q", loc)
	}
	for _, path := range []string{fmt.Sprintf("/apiv1/users/%d/dns-providers/1", uid), "/apiv1/me/dns-providers/1"} {
		if got := decode[dnsProviderView](t, do("GET", path, "", session)); got.ID != 1 || got.Name != "Main" {
			t.Fatalf("GET %s: %+v", path, got)
		}
	}
	for _, path := range []string{fmt.Sprintf("/apiv1/users/%d/dns-providers", uid), "/apiv1/me/dns-providers"} {
		r := do("GET", path, "", session)
		if list := decode[[]dnsProviderView](t, r); len(list) != 1 || list[0].ID != 1 || r.Header.Get("X-Total-Count") != "1" {
			t.Fatalf("GET %s: %s", path, r.Body)
		}
	}

	// The other user reaches none of it.
	e.want(do("GET", fmt.Sprintf("/apiv1/users/%d/dns-providers/1", uid), "", otherSession), 403, "another user")
	e.want(do("GET", "/apiv1/me/dns-providers/1", "", otherSession), 404, "DNS provider 1 not found")
	e.want(do("PUT", "/apiv1/me/dns-providers/1", `{"name":"mine"}`, otherSession), 404, "not found")
	e.want(do("DELETE", "/apiv1/me/dns-providers/1", "", otherSession), 404, "not found")
	if r := do("GET", "/apiv1/me/dns-providers", "", otherSession); string(r.Data) != "[]" || r.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("other user's list: %s", r.Body)
	}

	// Updates: name, settings (replacing all), never the provider.
	r = do("PUT", "/apiv1/me/dns-providers/1", `{"name":"Renamed"}`, session)
	e.want(r, 200, "")
	if u := decode[dnsProviderView](t, r); u.Name != "Renamed" || len(u.SettingKeys) != 2 {
		t.Fatalf("renamed %s", r.Data)
	}
	r = do("PUT", "/apiv1/me/dns-providers/1", `{"settings":{"CF_API_EMAIL":"ops@example.com","CF_API_KEY":"`+cfToken+`"}}`, session)
	e.want(r, 200, "")
	if u := decode[dnsProviderView](t, r); !slices.Equal(u.SettingKeys, []string{"CF_API_EMAIL", "CF_API_KEY"}) {
		t.Fatalf("new settings %s", r.Data)
	}
	if code, s, err := e.dns.Open(context.Background(), uid, 1); err != nil || code != "cloudflare" || s["CF_API_KEY"] != cfToken || len(s) != 2 {
		t.Fatalf("open after the update: %s %v %v", code, s, err)
	}
	e.wantField(do("PUT", "/apiv1/me/dns-providers/1", `{"provider":"route53"}`, session), 400, "provider", "cannot change")
	e.want(do("PUT", "/apiv1/me/dns-providers/1", `{}`, session), 400, "nothing to change")
	e.wantField(do("PUT", "/apiv1/me/dns-providers/1", `{"settings":{"CF_API_EMAIL":"a@example.com"}}`, session), 400, "settings", "needs one of")

	for _, c := range []struct{ body, field, what string }{
		{`{"provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"x"}}`, "name", "required"},
		{`{"name":"x","settings":{"CF_DNS_API_TOKEN":"x"}}`, "provider", "required"},
		{`{"name":"x","provider":"exec","settings":{"EXEC_PATH":"/bin/sh"}}`, "provider", "not available"},
		{`{"name":"x","provider":"nope","settings":{}}`, "provider", `unknown DNS provider "nope"`},
		{`{"name":"x","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN_FILE":"/etc/shadow"}}`, "settings.CF_DNS_API_TOKEN_FILE", "_FILE"},
		{`{"name":"x","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"x","PATH":"/tmp"}}`, "settings.PATH", "not a setting of DNS provider cloudflare"},
		{`{"name":"x","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":5}}`, "settings", "must be a string"},
		{`{"name":"x","provider":"cloudflare"}`, "settings", "needs one of"},
	} {
		e.wantField(do("POST", "/apiv1/me/dns-providers", c.body, session), 400, c.field, c.what)
	}
	e.wantField(do("GET", "/apiv1/me/dns-providers/x", "", session), 400, "dns_provider_id", "positive integer")
	e.wantField(do("GET", "/apiv1/me/dns-providers?offset=-2", "", session), 400, "offset", "0 or more")
	e.want(do("GET", "/apiv1/me/dns-providers", "", ""), 401, "")

	// No response ever carried a setting's value.
	for _, b := range bodies {
		if strings.Contains(b, cfToken) || strings.Contains(b, "ops@example.com") {
			t.Fatalf("a response carries a setting value: %s", b)
		}
	}

	e.want(do("DELETE", "/apiv1/me/dns-providers/1", "", session), 204, "")
	e.want(do("GET", "/apiv1/me/dns-providers/1", "", session), 404, "not found")
	e.want(do("DELETE", "/apiv1/me/dns-providers/1", "", session), 404, "not found")
}

// TestDNSProviderKeyScopes: API keys reach DNS providers only as granted.
func TestDNSProviderKeyScopes(t *testing.T) {
	e := newCertEnv(t)
	session, uid := e.registerActive("keys@example.com")
	for range 3 {
		e.dnsProvider(session)
	}
	key := func(perms ...identity.Permission) string {
		_, token, err := e.ids.CreateAPIKey(context.Background(), uid, identity.NewAPIKey{Name: "k", Permissions: perms})
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	read2 := key(identity.Permission{ObType: "dns_providers", ObID: "2", Actions: []string{"read"}})
	e.want(e.do("GET", "/apiv1/me/dns-providers/2", "", read2), 200, "")
	e.want(e.do("GET", "/apiv1/me/dns-providers/3", "", read2), 403, "dns_providers:read")
	r := e.do("GET", "/apiv1/me/dns-providers", "", read2)
	if list := decode[[]dnsProviderView](t, r); len(list) != 1 || list[0].ID != 2 || r.Header.Get("X-Total-Count") != "1" {
		t.Fatalf("list with a key for 2: %s", r.Body)
	}
	e.want(e.do("PUT", "/apiv1/me/dns-providers/2", `{"name":"n"}`, read2), 403, "dns_providers:update")
	e.want(e.do("DELETE", "/apiv1/me/dns-providers/2", "", read2), 403, "dns_providers:delete")
	e.want(e.do("POST", "/apiv1/me/dns-providers", `{"name":"n","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"t"}}`, read2),
		403, "dns_providers:create")

	certsOnly := key(identity.Permission{ObType: "certificates", ObID: "*", Actions: []string{"read"}})
	e.want(e.do("GET", "/apiv1/me/dns-providers", "", certsOnly), 403, "dns_providers:read")

	all := key(identity.Permission{ObType: "dns_providers", ObID: "*", Actions: []string{"read", "create", "update", "delete"}})
	e.want(e.do("POST", "/apiv1/me/dns-providers", `{"name":"n","provider":"cloudflare","settings":{"CF_DNS_API_TOKEN":"t"}}`, all), 201, "")
	if r := e.do("GET", "/apiv1/me/dns-providers?offset=1&limit=2", "", all); r.Header.Get("X-Total-Count") != "4" ||
		len(decode[[]dnsProviderView](t, r)) != 2 {
		t.Fatalf("page with a key for all: %s", r.Body)
	}
	e.want(e.do("PUT", "/apiv1/me/dns-providers/4", `{"name":"renamed"}`, all), 200, "")
	e.want(e.do("DELETE", "/apiv1/me/dns-providers/4", "", all), 204, "")
}
