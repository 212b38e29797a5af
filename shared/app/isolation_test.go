package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
)

// TestIsolationSweep calls every route of every route group (so routes
// added later are swept without editing this test) as user A, with A's
// session and with A's all-powerful API key, aimed at user B's objects:
// B's ids fill the path parameters and every id-like field of the body.
// It counts (and must find 0): a success on a route that names B's user or
// objects in its path; any response carrying B's private data; a non-admin
// getting past an admin route; and any change in what B sees through
// every GET route.
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
	newUser := func(email, name string) identity.User {
		u, err := a.Identity.Register(ctx, identity.Registration{Email: email, Password: "Sweep1Password", Name: name, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	session := func(u identity.User) string {
		s, err := a.Identity.StartSession(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		return s.Token
	}
	userA, userB := newUser("a@example.com", "A"), newUser("b@example.com", marker)
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
	acctB, err := a.ACME.Create(ctx, userB.ID, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: "b-acme@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	certB, err := a.Certs.Create(ctx, userB.ID, certs.NewCertificate{DomainName: "b-private.example", AcctID: acctB.ID})
	if err != nil {
		t.Fatal(err)
	}
	const dnsSecret = "b-dns-secret-token"
	dnsB, err := a.DNSProviders.Create(ctx, userB.ID, dnsprov.NewProvider{Name: "b-private-dns", Provider: "cloudflare",
		Settings: map[string]string{"CF_DNS_API_TOKEN": dnsSecret}})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate of B's naming the provider, so that a swept write
	// that moved it would show in B's view.
	if _, err := a.Certs.Create(ctx, userB.ID, certs.NewCertificate{DomainName: "b-private-dns.example", AcctID: acctB.ID,
		ValidationMethod: certs.MethodDNS01Provider, DNSProviderID: dnsB.ID}); err != nil {
		t.Fatal(err)
	}
	const devicePublicID = "b0b0b0b0-0000-4000-8000-00000000000b"
	devB, _, err := a.Devices.Register(ctx, userB.ID, devices.Registration{PublicID: devicePublicID, Name: "b-private-device",
		PublicKeyB64: base64.StdEncoding.EncodeToString(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	caB, err := a.CAs.Create(ctx, userB.ID, cas.NewCA{Name: "b-private-ca"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CAAssociations().Associate(ctx, userB.ID, devB.ID, caB.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConfigFiles().Put(ctx, userB.ID, devB.ID, devices.ConfigFileApplication, json.RawMessage(`{"verbose":"b-private-verbose"}`), ""); err != nil {
		t.Fatal(err)
	}
	secrets := []string{marker, "b@example.com", "b-acme@example.com", "b-private.example", "b-private-dns", dnsSecret, "b-private-device",
		"b-private-ca", caB.SerialNumber, "b-private-verbose"}

	// B's object ids by parameter or field name; other ids get "1".
	bIDs := map[string]string{httpapi.UserPathParam: fmt.Sprint(userB.ID), "apikey_id": keyB.ID,
		"acme_account_id": fmt.Sprint(acctB.ID), "certificate_id": fmt.Sprint(certB.ID), "dns_provider_id": fmt.Sprint(dnsB.ID),
		"device_id": fmt.Sprint(devB.ID), "device_public_id": devicePublicID, "ca_id": fmt.Sprint(caB.ID)}
	body, _ := json.Marshal(map[string]any{
		"id": acctB.ID, "accountId": acctB.ID, "account_id": acctB.ID, "user_id": userB.ID, "userId": userB.ID,
		"providerId": acctB.ProviderID, "is_default": true, "status": "disabled", "dns_provider_id": dnsB.ID, "ca_id": caB.ID,
		"validation": map[string]any{"method": certs.MethodDNS01Provider, "dns_provider_id": dnsB.ID},
		"name":       "sweep", "permissions": []identity.Permission{{ObType: "certificates", ObID: "*", Actions: []string{"read"}}},
	})
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
		req := httptest.NewRequest(method, path, strings.NewReader(string(body)))
		if strings.HasPrefix(cred, "ak_") {
			req.Header.Set("Authorization", "Bearer "+cred)
		} else {
			req.AddCookie(&http.Cookie{Name: cfg.SessionCookie, Value: cred})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var routes []httpapi.Route
	for _, g := range a.Groups() {
		routes = append(routes, g.Routes...)
	}
	sessionB := session(userB)
	snapshot := func() map[string]string {
		seen := map[string]string{}
		for _, r := range routes {
			if r.Method == "GET" {
				rec := call("GET", fill(r.Path), sessionB)
				seen[r.Path] = fmt.Sprint(rec.Code, " ", rec.Body.String())
			}
		}
		return seen
	}
	before := snapshot()

	leaks, calls, named := 0, 0, 0
	for _, r := range routes {
		namesB := strings.Contains(r.Path, "{")
		if namesB {
			named++
		}
		for _, cred := range []string{"session", keyA} {
			if cred == "session" {
				cred = session(userA) // fresh: a swept logout must not blind the rest
			}
			path := fill(r.Path)
			rec := call(r.Method, path, cred)
			calls++
			out := rec.Body.String()
			leaked := ""
			switch {
			case namesB && rec.Code < 400:
				leaked = "succeeded on B's object"
			case strings.HasPrefix(r.Path, "/apiv1/admin/") && rec.Code != http.StatusForbidden && rec.Code != http.StatusUnauthorized:
				leaked = "a non-admin passed an admin route"
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					leaked = "carried B's data " + s
				}
			}
			if leaked != "" {
				leaks++
				t.Errorf("%s %s as A (%.3s): %s: %d %s", r.Method, path, cred, leaked, rec.Code, out)
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
	t.Logf("isolation sweep: %d routes (%d naming objects), %d calls, %d leaks or changes", len(routes), named, calls, leaks)
	if named < 10 || len(before) < 8 {
		t.Fatalf("the sweep found only %d routes naming objects and %d GETs: is route discovery broken?", named, len(before))
	}
	for _, path := range []string{"/apiv1/users/{user_id}/apikeys", "/api/v1/acme/accounts", "/apiv1/users/{user_id}/certificates",
		"/apiv1/users/{user_id}/dns-providers", "/apiv1/users/{user_id}/dns-providers/{dns_provider_id}",
		"/apiv1/users/{user_id}/devices", "/apiv1/users/{user_id}/devices/{device_id}", "/apiv1/users/{user_id}/cas",
		"/apiv1/users/{user_id}/cas/{ca_id}", "/apiv1/users/{user_id}/devices/{device_id}/cas/{ca_id}"} {
		if !strings.Contains(before[path], "b-") {
			t.Fatalf("B's own view of %s shows none of B's objects, so the sweep could not see a leak: %s", path, before[path])
		}
	}
	// by-public-id, the CAs and the config files on a device share their
	// route pattern with the other GETs under a device
	// (certctrl.MergeDeviceGets), or need a file name, so the sweep's
	// filled path does not reach them: check them by name.
	for path, mark := range map[string]string{
		fmt.Sprintf("/apiv1/users/%d/devices/by-public-id/%s", userB.ID, devicePublicID): "b-private-device",
		fmt.Sprintf("/apiv1/users/%d/devices/%d/cas", userB.ID, devB.ID):                 "b-private-ca",
	} {
		if rec := call("GET", path, sessionB); rec.Code != 200 || !strings.Contains(rec.Body.String(), mark) {
			t.Fatalf("B's own %s: %d %s", path, rec.Code, rec.Body)
		}
		for _, cred := range []string{session(userA), keyA} {
			if rec := call("GET", path, cred); rec.Code < 400 || strings.Contains(rec.Body.String(), mark) {
				t.Errorf("A read B's %s: %d %s", path, rec.Code, rec.Body)
			}
		}
	}
}
