package dnsprov_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/store"
)

// The ports the service plays for other packages.
var (
	_ issuance.DNSCredentials = (*dnsprov.Service)(nil)
	_ certs.DNSProviders      = (*dnsprov.Service)(nil)
)

func newService(t *testing.T) (*dnsprov.Service, *testenv.Parts) {
	t.Helper()
	p := testenv.New(t)
	return dnsprov.New(p.Store, p.Sealer, dnsprov.Config{Now: p.Clock.Now, Log: p.Log}), p
}

func wantErr(t *testing.T, err error, code apperr.Code, field, contains string) {
	t.Helper()
	ae, ok := err.(*apperr.Error)
	if !ok || ae.Code != code || ae.Field != field || !strings.Contains(ae.Message, contains) {
		t.Fatalf("error %#v; want %s field %q mentioning %q", err, code, field, contains)
	}
}

const token = "cf-secret-token-0123456789"

func cloudflare(name string) dnsprov.NewProvider {
	return dnsprov.NewProvider{Name: name, Provider: "cloudflare", Settings: map[string]string{"CF_DNS_API_TOKEN": token}}
}

func TestTableIsTheCertificatesTable(t *testing.T) {
	if dnsprov.Table != certs.Table || dnsprov.CounterTable != certs.CounterTable {
		t.Fatalf("dnsprov tables %s/%s, certs %s/%s", dnsprov.Table, dnsprov.CounterTable, certs.Table, certs.CounterTable)
	}
}

func TestCreateGetListOpenDelete(t *testing.T) {
	svc, parts := newService(t)
	ctx := context.Background()
	p, err := svc.Create(ctx, 1, dnsprov.NewProvider{Name: "  Main zone  ", Provider: " Cloudflare ",
		Settings: map[string]string{"CF_DNS_API_TOKEN": token, "CLOUDFLARE_TTL": "300"}})
	if err != nil {
		t.Fatal(err)
	}
	want := dnsprov.Provider{ID: p.ID, UserID: 1, Name: "Main zone", Provider: "cloudflare",
		SettingKeys: []string{"CF_DNS_API_TOKEN", "CLOUDFLARE_TTL"}, CreatedAt: p.CreatedAt, UpdatedAt: p.CreatedAt}
	if p.ID != 1 || p.CreatedAt.IsZero() || !reflect.DeepEqual(p, want) {
		t.Fatalf("created\n%+v\nwant\n%+v", p, want)
	}
	got, err := svc.Get(ctx, 1, p.ID)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("get: %+v %v", got, err)
	}
	if err := svc.Exists(ctx, 1, p.ID); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), token) || !strings.Contains(string(b), `"setting_keys":["CF_DNS_API_TOKEN","CLOUDFLARE_TTL"]`) {
		t.Fatalf("record JSON: %s", b)
	}

	// At rest the value is sealed: the stored item does not hold it.
	it, err := parts.Store.Get(ctx, store.Key{Table: certs.Table, PK: "user#1", SK: fmt.Sprintf("dnsprov#%019d", p.ID)})
	if err != nil || strings.Contains(string(it.Value), token) || !strings.Contains(string(it.Value), "sealed_settings") {
		t.Fatalf("stored item: %s %v", it.Value, err)
	}

	code, settings, err := svc.Open(ctx, 1, p.ID)
	if err != nil || code != "cloudflare" || !maps.Equal(settings, map[string]string{"CF_DNS_API_TOKEN": token, "CLOUDFLARE_TTL": "300"}) {
		t.Fatalf("open: %s %v %v", code, settings, err)
	}

	// Another user reaches none of it.
	_, err = svc.Get(ctx, 2, p.ID)
	wantErr(t, err, apperr.NotFound, "", fmt.Sprintf("DNS provider %d not found", p.ID))
	wantErr(t, svc.Exists(ctx, 2, p.ID), apperr.NotFound, "", "not found")
	_, _, err = svc.Open(ctx, 2, p.ID)
	wantErr(t, err, apperr.NotFound, "", "not found")
	_, err = svc.Update(ctx, 2, p.ID, dnsprov.Changes{Name: ptr("mine now")})
	wantErr(t, err, apperr.NotFound, "", "not found")
	wantErr(t, svc.Delete(ctx, 2, p.ID), apperr.NotFound, "", "not found")
	if list, total, err := svc.List(ctx, 2, dnsprov.Filter{}, 0, 0); err != nil || total != 0 || len(list) != 0 || list == nil {
		t.Fatalf("user 2's list: %v %d %v", list, total, err)
	}

	// Copied into another user's partition, the sealed settings do not
	// open: the seal is bound to the user and the provider id.
	moved := it
	moved.Key = store.Key{Table: certs.Table, PK: "user#2", SK: it.SK}
	if _, err := parts.Store.Put(ctx, moved, store.IfAbsent); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Open(ctx, 2, p.ID); !errors.Is(err, keys.ErrWrongContext) || apperr.CodeOf(err) == apperr.NotFound {
		t.Fatalf("open of a copied record: %v", err)
	}

	if err := svc.Delete(ctx, 1, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Get(ctx, 1, p.ID)
	wantErr(t, err, apperr.NotFound, "", "not found")
	// A certificate naming a deleted provider learns why at its next issue.
	_, _, err = svc.Open(ctx, 1, p.ID)
	wantErr(t, err, apperr.NotFound, "", "deleted or is not yours; a certificate naming it cannot be issued")
	wantErr(t, svc.Delete(ctx, 1, p.ID), apperr.NotFound, "", "not found")
}

func ptr[T any](v T) *T { return &v }

func TestUpdate(t *testing.T) {
	svc, parts := newService(t)
	ctx := context.Background()
	p, err := svc.Create(ctx, 1, cloudflare("cf"))
	if err != nil {
		t.Fatal(err)
	}
	parts.Clock.Advance(time.Minute)
	u, err := svc.Update(ctx, 1, p.ID, dnsprov.Changes{Name: ptr("renamed")})
	if err != nil || u.Name != "renamed" || !slices.Equal(u.SettingKeys, []string{"CF_DNS_API_TOKEN"}) || !u.UpdatedAt.After(p.UpdatedAt) {
		t.Fatalf("rename: %+v %v", u, err)
	}
	if _, s, _ := svc.Open(ctx, 1, p.ID); s["CF_DNS_API_TOKEN"] != token {
		t.Fatalf("a rename changed the settings: %v", s)
	}
	// Settings replace all of the old ones.
	next := map[string]string{"CF_API_EMAIL": "ops@example.com", "CLOUDFLARE_API_KEY": "global-key"}
	if u, err = svc.Update(ctx, 1, p.ID, dnsprov.Changes{Settings: next}); err != nil ||
		!slices.Equal(u.SettingKeys, []string{"CF_API_EMAIL", "CLOUDFLARE_API_KEY"}) || u.Name != "renamed" {
		t.Fatalf("settings: %+v %v", u, err)
	}
	if code, s, err := svc.Open(ctx, 1, p.ID); err != nil || code != "cloudflare" || !maps.Equal(s, next) {
		t.Fatalf("open after update: %v %v", s, err)
	}
	// Updates are validated against the stored provider.
	_, err = svc.Update(ctx, 1, p.ID, dnsprov.Changes{Settings: map[string]string{"AWS_ACCESS_KEY_ID": "x"}})
	wantErr(t, err, apperr.Invalid, "settings.AWS_ACCESS_KEY_ID", "not a setting of DNS provider cloudflare")
	_, err = svc.Update(ctx, 1, p.ID, dnsprov.Changes{Settings: map[string]string{}})
	wantErr(t, err, apperr.Invalid, "settings", "needs one of: CF_DNS_API_TOKEN; or CF_API_EMAIL + CF_API_KEY")
	_, err = svc.Update(ctx, 1, p.ID, dnsprov.Changes{Name: ptr(" ")})
	wantErr(t, err, apperr.Invalid, "name", "required")
	if got, _ := svc.Get(ctx, 1, p.ID); got.Name != "renamed" || len(got.SettingKeys) != 2 {
		t.Fatalf("a refused update changed the record: %+v", got)
	}
}

func TestCreateRejects(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	with := func(f func(*dnsprov.NewProvider)) dnsprov.NewProvider {
		np := cloudflare("cf")
		np.Settings = maps.Clone(np.Settings)
		f(&np)
		return np
	}
	many := map[string]string{}
	for i := range 51 {
		many[fmt.Sprintf("K%d", i)] = "v"
	}
	for _, c := range []struct {
		np              dnsprov.NewProvider
		field, contains string
	}{
		{with(func(n *dnsprov.NewProvider) { n.Name = "" }), "name", "required"},
		{with(func(n *dnsprov.NewProvider) { n.Name = strings.Repeat("é", 101) }), "name", "101 characters; at most 100"},
		{with(func(n *dnsprov.NewProvider) { n.Name = "tab\there" }), "name", "printable"},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "" }), "provider", "required"},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "nosuchdns" }), "provider", `unknown DNS provider "nosuchdns"`},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "exec" }), "provider", `"exec" is not available here`},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "manual" }), "provider", `"manual" is not available here`},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "transip" }), "provider", "TRANSIP_PRIVATE_KEY_PATH"},
		{with(func(n *dnsprov.NewProvider) { n.Provider = "hyperone" }), "provider", "takes no credentials from settings"},
		{with(func(n *dnsprov.NewProvider) { n.Settings = many }), "settings", "51 settings; at most 50"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["CF_DNS_API_TOKEN_FILE"] = "/etc/shadow" }), "settings.CF_DNS_API_TOKEN_FILE", "_FILE"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["OTHER_FILE"] = "/etc/passwd" }), "settings.OTHER_FILE", "file on certfleet's servers"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["AWS_REGION"] = "eu-west-1" }), "settings.AWS_REGION", "not a setting of DNS provider cloudflare"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["CLOUDFLARE_TTL"] = "  " }), "settings.CLOUDFLARE_TTL", "empty"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["CF_DNS_API_TOKEN"] = strings.Repeat("a", 4097) }), "settings.CF_DNS_API_TOKEN", "4097 bytes long; at most 4096"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["CF_DNS_API_TOKEN"] = "a\x00b" }), "settings.CF_DNS_API_TOKEN", "printable"},
		{with(func(n *dnsprov.NewProvider) { n.Settings["CF_DNS_API_TOKEN"] = "\xff\xfe" }), "settings.CF_DNS_API_TOKEN", "printable"},
		{with(func(n *dnsprov.NewProvider) { n.Settings = map[string]string{"CF_API_EMAIL": "a@example.com"} }), "settings", "needs one of"},
		{with(func(n *dnsprov.NewProvider) { n.Settings = nil }), "settings", "needs one of"},
		{dnsprov.NewProvider{Name: "r53", Provider: "route53", Settings: map[string]string{"AWS_ACCESS_KEY_ID": "AKIA", "AWS_PROFILE": "default"}},
			"settings.AWS_PROFILE", "read a file on certfleet's servers"},
		{dnsprov.NewProvider{Name: "r53", Provider: "route53", Settings: map[string]string{"AWS_REGION": "eu-west-1"}},
			"settings", "needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; missing AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"},
		{dnsprov.NewProvider{Name: "ali", Provider: "alidns", Settings: map[string]string{"ALICLOUD_RAM_ROLE": "role"}},
			"settings.ALICLOUD_RAM_ROLE", "cloud identity"},
		{dnsprov.NewProvider{Name: "gce", Provider: "gcloud", Settings: map[string]string{"GCE_SERVICE_ACCOUNT_FILE": "/root/sa.json"}},
			"settings.GCE_SERVICE_ACCOUNT_FILE", "_FILE"},
		{dnsprov.NewProvider{Name: "edge", Provider: "edgedns", Settings: map[string]string{"AKAMAI_EDGERC": "/root/.edgerc"}},
			"settings.AKAMAI_EDGERC", "read a file"},
	} {
		_, err := svc.Create(ctx, 1, c.np)
		wantErr(t, err, apperr.Invalid, c.field, c.contains)
	}
	if _, total, _ := svc.List(ctx, 1, dnsprov.Filter{}, 0, 0); total != 0 {
		t.Fatalf("%d providers after refusals", total)
	}

	// Accepted: aliases stand for their names; multi-line values (a JSON
	// service account, a PEM key) are text; optional credentials may be
	// left out.
	for _, np := range []dnsprov.NewProvider{
		{Name: "alias", Provider: "cloudflare", Settings: map[string]string{"CLOUDFLARE_EMAIL": "a@example.com", "CF_API_KEY": "k"}},
		{Name: "gce", Provider: "gcloud", Settings: map[string]string{"GCE_SERVICE_ACCOUNT": "{\n  \"type\": \"service_account\"\n}"}},
		{Name: "ali", Provider: "alidns", Settings: map[string]string{"ALICLOUD_ACCESS_KEY": "ak", "ALICLOUD_SECRET_KEY": "sk"}},
		{Name: "ovh", Provider: "ovh", Settings: map[string]string{"OVH_ENDPOINT": "ovh-eu", "OVH_ACCESS_TOKEN": "t"}},
	} {
		if _, err := svc.Create(ctx, 1, np); err != nil {
			t.Fatalf("%s: %v", np.Name, err)
		}
	}
}

func TestListPagesAndFilters(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := svc.Create(ctx, 3, cloudflare(fmt.Sprintf("p%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Create(ctx, 4, cloudflare("other user")); err != nil {
		t.Fatal(err)
	}
	names := func(list []dnsprov.Provider) []string {
		var out []string
		for _, p := range list {
			out = append(out, p.Name)
		}
		return out
	}
	list, total, err := svc.List(ctx, 3, dnsprov.Filter{}, 1, 2)
	if err != nil || total != 5 || !slices.Equal(names(list), []string{"p1", "p2"}) {
		t.Fatalf("page: %v %d %v", names(list), total, err)
	}
	odd := dnsprov.Filter{Allow: func(id int64) bool { return id%2 == 1 }}
	if list, total, _ = svc.List(ctx, 3, odd, 0, 0); total != 3 || !slices.Equal(names(list), []string{"p0", "p2", "p4"}) {
		t.Fatalf("filtered: %v %d", names(list), total)
	}
	if list, total, _ = svc.List(ctx, 3, dnsprov.Filter{}, 9, 2); total != 5 || len(list) != 0 || list == nil {
		t.Fatalf("past the end: %v %d", list, total)
	}
}

// TestMaxPerUser: the bound holds under concurrent creates, a refused
// create takes no room, and a delete makes room again.
func TestMaxPerUser(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := []int64{}, 0
	for i := range dnsprov.MaxPerUser + 10 {
		wg.Go(func() {
			p, err := svc.Create(ctx, 5, cloudflare(fmt.Sprintf("p%d", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created = append(created, p.ID)
			case apperr.CodeOf(err) == apperr.Conflict && strings.Contains(err.Error(), "at most 100 DNS providers"):
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(created) != dnsprov.MaxPerUser || refused != 10 {
		t.Fatalf("%d created, %d refused", len(created), refused)
	}
	if _, total, _ := svc.List(ctx, 5, dnsprov.Filter{}, 0, 1000); total != dnsprov.MaxPerUser {
		t.Fatalf("%d listed", total)
	}
	_, err := svc.Create(ctx, 5, cloudflare("one more"))
	wantErr(t, err, apperr.Conflict, "", "at most 100")
	if _, err := svc.Create(ctx, 6, cloudflare("another user")); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, 5, created[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, 5, cloudflare("room again")); err != nil {
		t.Fatal(err)
	}
}
