package certs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/store"
)

// rig is the certificate service over real parts: bbolt, the local queue,
// and an ACME account service registering with Pebble.
type rig struct {
	t     *testing.T
	parts *testenv.Parts
	accts *acmeacct.Service
	dns   *dnsprov.Service
	svc   *certs.Service
}

// delegationZone is the rig's CERTFLEET_DELEGATION_ZONE.
const delegationZone = "acme.certfleet.test"

func newRig(t *testing.T) *rig {
	t.Helper()
	p := testenv.New(t)
	accts, _ := p.ACMEAccounts(t, pebbletest.Options{})
	dns := dnsprov.New(p.Store, p.Sealer, dnsprov.Config{Now: p.Clock.Now, Log: p.Log})
	svc := certs.New(p.Store, accts, certs.Config{Providers: dns, DelegationZone: delegationZone, Now: p.Clock.Now, Log: p.Log})
	return &rig{t: t, parts: p, accts: accts, dns: dns, svc: svc}
}

// dnsProvider stores cloudflare credentials for user.
func (r *rig) dnsProvider(user int64, name string) dnsprov.Provider {
	r.t.Helper()
	p, err := r.dns.Create(context.Background(), user, dnsprov.NewProvider{Name: name, Provider: "cloudflare",
		Settings: map[string]string{"CF_DNS_API_TOKEN": "token-" + name}})
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// account creates an ACME account for user and registers it with Pebble.
func (r *rig) account(user int64, email string) acmeacct.Account {
	r.t.Helper()
	a, err := r.accts.Create(context.Background(), user, acmeacct.NewAccount{ProviderName: "letsencrypt", Email: email})
	if err != nil {
		r.t.Fatal(err)
	}
	r.parts.RunQueued(r.t, map[string]func(context.Context, queue.Delivery) error{acmeacct.KindRegister: r.accts.RegisterStep})
	if a, err = r.accts.Get(context.Background(), user, a.ID); err != nil || a.Status != acmeacct.StatusActive {
		r.t.Fatalf("account after registration: %+v %v", a, err)
	}
	return a
}

func wantErr(t *testing.T, err error, code apperr.Code, field, contains string) {
	t.Helper()
	ae, ok := err.(*apperr.Error)
	if !ok || ae.Code != code || ae.Field != field || !strings.Contains(ae.Message, contains) {
		t.Fatalf("error %#v; want %s field %q mentioning %q", err, code, field, contains)
	}
}

func TestCreateGetListDelete(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "ops@example.com")

	c, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: "example.com",
		SANs: []string{"example.com", "www.example.com"}, AcctID: acct.ID, KeyAlgorithm: "ECDSA", Policy: "HYBRID"})
	if err != nil {
		t.Fatal(err)
	}
	want := certs.Certificate{ID: c.ID, UserID: 1, DomainName: "example.com", SANs: []string{"example.com", "www.example.com"},
		AcctID: acct.ID, KeyAlgorithm: "ECDSA", KeySize: 256, Policy: "HYBRID", ChallengeType: "http-01",
		Validation: certs.Validation{Method: "http-01"}, Status: "new", CreatedAt: c.CreatedAt, UpdatedAt: c.CreatedAt}
	if c.ID != 1 || c.CreatedAt.IsZero() || !reflect.DeepEqual(c, want) {
		t.Fatalf("created\n%+v\nwant\n%+v", c, want)
	}
	got, err := r.svc.Get(ctx, 1, 1)
	if err != nil || got.DomainName != "example.com" || len(got.SANs) != 2 || got.Status != certs.StatusNew {
		t.Fatalf("get: %+v %v", got, err)
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), "renew_at") || strings.Contains(string(b), "not_after") || strings.Contains(string(b), "key\":") {
		t.Fatalf("record JSON: %s", b)
	}

	// Other users see nothing of it.
	_, err = r.svc.Get(ctx, 2, 1)
	wantErr(t, err, apperr.NotFound, "", "certificate 1 not found")
	if list, total, err := r.svc.List(ctx, 2, certs.Filter{}, 0, 0); err != nil || total != 0 || len(list) != 0 {
		t.Fatalf("user 2's list: %v %d %v", list, total, err)
	}
	_, _, err = r.svc.ListByAccount(ctx, 2, acct.ID, certs.Filter{}, 0, 0)
	wantErr(t, err, apperr.NotFound, "", "not found")
	wantErr(t, r.svc.Delete(ctx, 2, 1), apperr.NotFound, "", "not found")

	// The account is held while the certificate uses it.
	wantErr(t, r.accts.Delete(ctx, 1, acct.ID), apperr.Conflict, "", acmeacct.MsgRefCerts)
	list, total, err := r.svc.ListByAccount(ctx, 1, acct.ID, certs.Filter{}, 0, 0)
	if err != nil || total != 1 || len(list) != 1 || list[0].ID != 1 {
		t.Fatalf("by account: %v %d %v", list, total, err)
	}
	if err := r.svc.Delete(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	_, err = r.svc.Get(ctx, 1, 1)
	wantErr(t, err, apperr.NotFound, "", "not found")
	wantErr(t, r.svc.Delete(ctx, 1, 1), apperr.NotFound, "", "not found")
	if _, total, _ := r.svc.ListByAccount(ctx, 1, acct.ID, certs.Filter{}, 0, 0); total != 0 {
		t.Fatalf("by account after delete: %d", total)
	}
	if err := r.accts.Delete(ctx, 1, acct.ID); err != nil {
		t.Fatalf("account delete after the certificate went: %v", err)
	}
}

func TestCreateRejects(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	mine := r.account(1, "mine@example.com")
	theirs := r.account(2, "theirs@example.com")
	disabled := r.account(1, "off@example.com")
	if _, err := r.accts.Disable(ctx, 1, disabled.ID); err != nil {
		t.Fatal(err)
	}
	ok := certs.NewCertificate{DomainName: "example.com", AcctID: mine.ID}
	with := func(f func(*certs.NewCertificate)) certs.NewCertificate {
		nc := ok
		f(&nc)
		return nc
	}
	for _, c := range []struct {
		nc       certs.NewCertificate
		code     apperr.Code
		field    string
		contains string
	}{
		{with(func(n *certs.NewCertificate) { n.AcctID = 0 }), apperr.Invalid, "acct_id", "required"},
		{with(func(n *certs.NewCertificate) { n.AcctID = theirs.ID }), apperr.Invalid, "acct_id", fmt.Sprintf("ACME account %d is not one of your accounts", theirs.ID)},
		{with(func(n *certs.NewCertificate) { n.AcctID = 999 }), apperr.Invalid, "acct_id", "999"},
		{with(func(n *certs.NewCertificate) { n.AcctID = disabled.ID }), apperr.Invalid, "acct_id", "is disabled"},
		{with(func(n *certs.NewCertificate) { n.KeyAlgorithm = "DSA" }), apperr.Invalid, "key_algorithm", `"DSA"`},
		{with(func(n *certs.NewCertificate) { n.KeySize = 521 }), apperr.Invalid, "key_size", "ECDSA keys are 256, 384 bits, not 521"},
		{with(func(n *certs.NewCertificate) { n.KeyAlgorithm, n.KeySize = "RSA", 1024 }), apperr.Invalid, "key_size", "1024"},
		{with(func(n *certs.NewCertificate) { n.Policy = "EVERYONE" }), apperr.Invalid, "policy", `"EVERYONE"`},
		{with(func(n *certs.NewCertificate) { n.ChallengeType = "dns-02" }), apperr.Invalid, "challenge_type", `"dns-02"`},
		{with(func(n *certs.NewCertificate) { n.ValidationMethod = "carrier-pigeon" }), apperr.Invalid, "validation.method", `"carrier-pigeon"`},
		{with(func(n *certs.NewCertificate) { n.ChallengeType, n.ValidationMethod = "http-01", "dns-01-provider" }), apperr.Invalid, "validation.method", "challenge_type is http-01"},
		{with(func(n *certs.NewCertificate) { n.Policy, n.ServerDecryptExport = "DEVICE_REQUIRED", true }), apperr.Invalid, "server_decrypt_export", "DEVICE_REQUIRED never allows"},
		{with(func(n *certs.NewCertificate) { n.SANs = []string{"*.example.com"} }), apperr.Invalid, "sans[0]", "needs DNS-01"},
		{with(func(n *certs.NewCertificate) { n.DomainName = "" }), apperr.Invalid, "domain_name", "required"},
	} {
		_, err := r.svc.Create(ctx, 1, c.nc)
		wantErr(t, err, c.code, c.field, c.contains)
	}
	// Nothing was created or counted: both accounts can go.
	if _, total, _ := r.svc.List(ctx, 1, certs.Filter{}, 0, 0); total != 0 {
		t.Fatalf("%d certificates after refusals", total)
	}
	for _, a := range []acmeacct.Account{mine, disabled} {
		if err := r.accts.Delete(ctx, 1, a.ID); err != nil {
			t.Fatalf("account %d: %v", a.ID, err)
		}
	}

	// The accepted variants and their defaults.
	acct := r.account(1, "again@example.com")
	dns := r.dnsProvider(1, "cf")
	c, err := r.svc.Create(ctx, 1, certs.NewCertificate{SANs: []string{"*.example.com", "example.com"}, AcctID: acct.ID,
		KeyAlgorithm: "rsa", Policy: "master_only", ChallengeType: "DNS-01", DNSProviderID: dns.ID, ServerDecryptExport: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.DomainName != "*.example.com" || c.KeyAlgorithm != "RSA" || c.KeySize != 2048 || c.Policy != certs.PolicyMasterOnly ||
		c.ChallengeType != "dns-01" || c.Validation != (certs.Validation{Method: certs.MethodDNS01Provider, DNSProviderID: dns.ID}) ||
		!c.ServerDecryptExport {
		t.Fatalf("created %+v", c)
	}
	c, err = r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: "d.example", AcctID: acct.ID, ValidationMethod: "dns-01-delegation", KeySize: 384})
	if err != nil || c.ChallengeType != "dns-01" || c.KeyAlgorithm != "ECDSA" || c.KeySize != 384 {
		t.Fatalf("created %+v %v", c, err)
	}
}

func TestUpdate(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a1, a2 := r.account(1, "one@example.com"), r.account(1, "two@example.com")
	c, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: "example.com", SANs: []string{"www.example.com"}, AcctID: a1.ID})
	if err != nil {
		t.Fatal(err)
	}
	ptr := func(s string) *string { return &s }
	r.parts.Clock.Advance(time.Minute)

	// Names while new: domain_name alone replaces the primary name.
	u, err := r.svc.Update(ctx, 1, c.ID, certs.Changes{DomainName: ptr("Example.org")})
	if err != nil || u.DomainName != "example.org" || !slices.Equal(u.SANs, []string{"example.org", "www.example.com"}) || !u.UpdatedAt.After(c.UpdatedAt) {
		t.Fatalf("domain change: %+v %v", u, err)
	}
	// sans alone keeps a still-listed primary name, else takes the first.
	sans := []string{"a.example.org", "example.org"}
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &sans}); err != nil || u.DomainName != "example.org" {
		t.Fatalf("sans change: %+v %v", u, err)
	}
	sans = []string{"b.example.org", "c.example.org"}
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &sans}); err != nil || u.DomainName != "b.example.org" || len(u.SANs) != 2 {
		t.Fatalf("sans change: %+v %v", u, err)
	}
	// A wildcard needs dns-01 in the same update; challenge_type alone
	// keeps a method of its own family.
	sans = []string{"*.example.org"}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &sans})
	wantErr(t, err, apperr.Invalid, "sans[0]", "needs DNS-01")
	u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &sans, ValidationMethod: ptr("dns-01-delegation")})
	if err != nil || u.ChallengeType != "dns-01" || u.DomainName != "*.example.org" {
		t.Fatalf("wildcard: %+v %v", u, err)
	}
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ChallengeType: ptr("dns-01")}); err != nil || u.Validation.Method != certs.MethodDNS01Delegation {
		t.Fatalf("same challenge type: %+v %v", u, err)
	}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ChallengeType: ptr("http-01")})
	wantErr(t, err, apperr.Invalid, "domain_name", "needs DNS-01")
	// Key: a new algorithm takes its default size.
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{KeyAlgorithm: ptr("RSA")}); err != nil || u.KeySize != 2048 {
		t.Fatalf("key: %+v %v", u, err)
	}
	// Policy and export: DEVICE_REQUIRED refuses export either way round.
	yes := true
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{Policy: ptr("MASTER_ONLY"), ServerDecryptExport: &yes}); err != nil || !u.ServerDecryptExport {
		t.Fatalf("export: %+v %v", u, err)
	}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{Policy: ptr("DEVICE_REQUIRED")})
	wantErr(t, err, apperr.Invalid, "policy", "never allows server-decrypted export")

	// Moving to another account moves the hold.
	wantErr(t, r.accts.Delete(ctx, 1, a1.ID), apperr.Conflict, "", acmeacct.MsgRefCerts)
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{AcctID: &a2.ID}); err != nil || u.AcctID != a2.ID {
		t.Fatalf("move: %+v %v", u, err)
	}
	if list, _, _ := r.svc.ListByAccount(ctx, 1, a2.ID, certs.Filter{}, 0, 0); len(list) != 1 {
		t.Fatalf("by new account: %v", list)
	}
	if err := r.accts.Delete(ctx, 1, a1.ID); err != nil {
		t.Fatalf("old account after the move: %v", err)
	}
	wantErr(t, r.accts.Delete(ctx, 1, a2.ID), apperr.Conflict, "", acmeacct.MsgRefCerts)
	other := r.account(2, "other@example.com")
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{AcctID: &other.ID})
	wantErr(t, err, apperr.Invalid, "acct_id", "not one of your accounts")

	// Once issued, names, key and validation are fixed; the rest is not.
	if err := r.svc.RecordIssued(ctx, 1, c.ID, 1, time.Now().Add(90*24*time.Hour), time.Now().Add(60*24*time.Hour), time.Time{}); err != nil {
		t.Fatal(err)
	}
	sans = []string{"x.example.org"}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &sans})
	wantErr(t, err, apperr.Conflict, "domain_name", "has been issued")
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{KeySize: new(int)})
	if err != nil { // 0: the default of the current algorithm, which it is
		t.Fatal(err)
	}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{KeyAlgorithm: ptr("ECDSA")})
	wantErr(t, err, apperr.Conflict, "key_algorithm", "has been issued")
	same := []string{"*.example.org"}
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{SANs: &same, Policy: ptr("HYBRID")}); err != nil || u.Policy != "HYBRID" || u.Status != "issued" || u.RenewAt.IsZero() {
		t.Fatalf("policy after issue: %+v %v", u, err)
	}
	_, err = r.svc.Update(ctx, 2, c.ID, certs.Changes{Policy: ptr("HYBRID")})
	wantErr(t, err, apperr.NotFound, "", "not found")
}

func TestListPagesAndFilters(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a1, a2 := r.account(1, "one@example.com"), r.account(1, "two@example.com")
	for i := range 7 {
		acct := a1.ID
		if i%2 == 1 {
			acct = a2.ID
		}
		if _, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: fmt.Sprintf("h%d.example.com", i), AcctID: acct}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(list []certs.Certificate) []int64 {
		var out []int64
		for _, c := range list {
			out = append(out, c.ID)
		}
		return out
	}
	list, total, err := r.svc.List(ctx, 1, certs.Filter{}, 2, 3)
	if err != nil || total != 7 || !slices.Equal(ids(list), []int64{3, 4, 5}) {
		t.Fatalf("page: %v %d %v", ids(list), total, err)
	}
	if list, total, _ = r.svc.List(ctx, 1, certs.Filter{}, 10, 3); total != 7 || len(list) != 0 || list == nil {
		t.Fatalf("past the end: %v %d", list, total)
	}
	odd := certs.Filter{Allow: func(id int64) bool { return id%2 == 1 }}
	if list, total, _ = r.svc.List(ctx, 1, odd, 1, 2); total != 4 || !slices.Equal(ids(list), []int64{3, 5}) {
		t.Fatalf("filtered: %v %d", ids(list), total)
	}
	if list, total, _ = r.svc.ListByAccount(ctx, 1, a2.ID, certs.Filter{}, 0, 0); total != 3 || !slices.Equal(ids(list), []int64{2, 4, 6}) {
		t.Fatalf("by account: %v %d", ids(list), total)
	}
	later := certs.Filter{Allow: func(id int64) bool { return id >= 3 }}
	if list, total, _ = r.svc.ListByAccount(ctx, 1, a1.ID, later, 1, 1); total != 3 || !slices.Equal(ids(list), []int64{5}) {
		t.Fatalf("by account, filtered: %v %d", ids(list), total)
	}
}

// TestRenewalIndex: a certificate with a renew_at is in gsi2 by that
// time, so the scheduler can read what is due in one query.
func TestRenewalIndex(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(7, "r@example.com")
	base := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	for i, days := range []int{30, 10, 20} {
		c, err := r.svc.Create(ctx, 7, certs.NewCertificate{DomainName: fmt.Sprintf("r%d.example.com", i), AcctID: acct.ID})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.svc.RecordIssued(ctx, 7, c.ID, 1, base.AddDate(0, 0, days+30), base.AddDate(0, 0, days), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.svc.Create(ctx, 7, certs.NewCertificate{DomainName: "never.example.com", AcctID: acct.ID}); err != nil {
		t.Fatal(err)
	}
	page, err := r.parts.Store.Query(ctx, store.Query{Table: certs.Table, Index: certs.IndexByRenewal, PK: "renew",
		SKTo: base.AddDate(0, 0, 25).Format("20060102T150405Z")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range page.Items {
		var c certs.Certificate
		if err := json.Unmarshal(it.Value, &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, c.DomainName)
	}
	if !slices.Equal(got, []string{"r1.example.com", "r2.example.com"}) {
		t.Fatalf("due by day 25: %v", got)
	}
}

// TestConcurrentCreatesCountEveryCertificate: the account's count of
// certificates stays exact under concurrent creates and deletes.
func TestConcurrentCreatesCountEveryCertificate(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "busy@example.com")
	const n = 100 // "100 certificates requested at once" (issue 5)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: fmt.Sprintf("c%d.example.com", i), AcctID: acct.ID})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, total, err := r.svc.List(ctx, 1, certs.Filter{}, 0, 0)
	if err != nil || total != n {
		t.Fatalf("%d certificates, %v", total, err)
	}
	for _, c := range list[:n-1] {
		wg.Go(func() {
			if err := r.svc.Delete(ctx, 1, c.ID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	wantErr(t, r.accts.Delete(ctx, 1, acct.ID), apperr.Conflict, "", acmeacct.MsgRefCerts)
	if err := r.svc.Delete(ctx, 1, list[n-1].ID); err != nil {
		t.Fatal(err)
	}
	if err := r.accts.Delete(ctx, 1, acct.ID); err != nil {
		t.Fatalf("account after every certificate went: %v", err)
	}
}

func TestMaxPerUser(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "cap@example.com")
	svc := certs.New(r.parts.Store, r.accts, certs.Config{MaxPerUser: 2})
	create := func(name string, acctID int64) (certs.Certificate, error) {
		return svc.Create(ctx, 1, certs.NewCertificate{DomainName: name, AcctID: acctID})
	}
	// A refused create takes no room.
	_, err := create("bad.example.com", 999)
	wantErr(t, err, apperr.Invalid, "acct_id", "999")
	first, err := create("c1.example.com", acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := create("c2.example.com", acct.ID); err != nil {
		t.Fatal(err)
	}
	_, err = create("c3.example.com", acct.ID)
	wantErr(t, err, apperr.Conflict, "", "at most 2 certificates")
	_, err = create("c3.example.com", acct.ID)
	wantErr(t, err, apperr.Conflict, "", "at most 2 certificates")
	// Other users have their own room; a delete makes room again.
	other := r.account(2, "cap2@example.com")
	if _, err := svc.Create(ctx, 2, certs.NewCertificate{DomainName: "o.example.com", AcctID: other.ID}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, 1, first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := create("c3.example.com", acct.ID); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := svc.List(ctx, 1, certs.Filter{}, 0, 0); total != 2 {
		t.Fatalf("%d certificates", total)
	}
}

// TestDNSProviderValidation: dns-01-provider names one of the user's DNS
// providers, other methods none; it is part of the validation, fixed once
// issued.
func TestDNSProviderValidation(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "dns@example.com")
	mine, spare, theirs := r.dnsProvider(1, "mine"), r.dnsProvider(1, "spare"), r.dnsProvider(2, "theirs")
	nc := func(method string, provider int64) certs.NewCertificate {
		return certs.NewCertificate{DomainName: "*.dns.example", AcctID: acct.ID, ValidationMethod: method, DNSProviderID: provider}
	}
	for _, c := range []struct {
		nc              certs.NewCertificate
		field, contains string
	}{
		{nc("dns-01-provider", 0), "validation.dns_provider_id", "is required with dns-01-provider"},
		{certs.NewCertificate{DomainName: "dns.example", AcctID: acct.ID, ChallengeType: "dns-01"}, "validation.dns_provider_id", "is required"},
		{nc("dns-01-provider", -4), "validation.dns_provider_id", "is required"},
		{nc("dns-01-provider", theirs.ID), "validation.dns_provider_id", fmt.Sprintf("DNS provider %d is not one of your DNS providers", theirs.ID)},
		{nc("dns-01-provider", 999), "validation.dns_provider_id", "999 is not one of your"},
		{nc("dns-01-delegation", mine.ID), "validation.dns_provider_id", "is only for dns-01-provider, not dns-01-delegation"},
		{certs.NewCertificate{DomainName: "dns.example", AcctID: acct.ID, DNSProviderID: mine.ID}, "validation.dns_provider_id", "not http-01"},
	} {
		_, err := r.svc.Create(ctx, 1, c.nc)
		wantErr(t, err, apperr.Invalid, c.field, c.contains)
	}
	if _, total, _ := r.svc.List(ctx, 1, certs.Filter{}, 0, 0); total != 0 {
		t.Fatalf("%d certificates after refusals", total)
	}

	c, err := r.svc.Create(ctx, 1, nc("dns-01-provider", mine.ID))
	if err != nil || c.Validation.DNSProviderID != mine.ID {
		t.Fatalf("created %+v %v", c, err)
	}
	ptr := func(s string) *string { return &s }
	// Another of the user's providers, not another user's.
	u, err := r.svc.Update(ctx, 1, c.ID, certs.Changes{DNSProviderID: &spare.ID})
	if err != nil || u.Validation.DNSProviderID != spare.ID {
		t.Fatalf("move to spare: %+v %v", u, err)
	}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{DNSProviderID: &theirs.ID})
	wantErr(t, err, apperr.Invalid, "validation.dns_provider_id", "not one of your DNS providers")
	// Another method drops the provider; coming back needs one again.
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ValidationMethod: ptr("dns-01-delegation")}); err != nil ||
		u.Validation != (certs.Validation{Method: certs.MethodDNS01Delegation}) {
		t.Fatalf("to delegation: %+v %v", u, err)
	}
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ValidationMethod: ptr("dns-01-provider")})
	wantErr(t, err, apperr.Invalid, "validation.dns_provider_id", "is required")
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ValidationMethod: ptr("dns-01-provider"), DNSProviderID: &mine.ID}); err != nil ||
		u.Validation.DNSProviderID != mine.ID {
		t.Fatalf("back to the provider: %+v %v", u, err)
	}

	// A deleted provider is not re-checked while the certificate keeps it,
	// so the rest stays editable; Open then tells the worker it is gone.
	if err := r.dns.Delete(ctx, 1, mine.ID); err != nil {
		t.Fatal(err)
	}
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{Policy: ptr("MASTER_ONLY")}); err != nil || u.Validation.DNSProviderID != mine.ID {
		t.Fatalf("policy with a deleted provider: %+v %v", u, err)
	}
	if _, _, err := r.dns.Open(ctx, 1, u.Validation.DNSProviderID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("open of the deleted provider: %v", err)
	}

	// Once issued the provider is fixed, like the method.
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{DNSProviderID: &spare.ID}); err != nil {
		t.Fatal(err)
	}
	if err := r.svc.RecordIssued(ctx, 1, c.ID, 1, time.Now().Add(90*24*time.Hour), time.Now().Add(60*24*time.Hour), time.Time{}); err != nil {
		t.Fatal(err)
	}
	other := r.dnsProvider(1, "other")
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{DNSProviderID: &other.ID})
	wantErr(t, err, apperr.Conflict, "validation.dns_provider_id", "has been issued")
	_, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{ValidationMethod: ptr("dns-01-delegation")})
	wantErr(t, err, apperr.Conflict, "validation.method", "has been issued")
	if u, err = r.svc.Update(ctx, 1, c.ID, certs.Changes{DNSProviderID: &spare.ID, Policy: ptr("HYBRID")}); err != nil || u.Policy != "HYBRID" {
		t.Fatalf("same provider after issue: %+v %v", u, err)
	}
}

// TestDelegationNeedsAZone: without CERTFLEET_DELEGATION_ZONE no
// certificate takes dns-01-delegation, and one that has it keeps it.
func TestDelegationNeedsAZone(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "zone@example.com")
	withZone, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: "a.example", AcctID: acct.ID, ValidationMethod: "dns-01-delegation"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := r.svc.Create(ctx, 1, certs.NewCertificate{DomainName: "b.example", AcctID: acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	noZone := certs.New(r.parts.Store, r.accts, certs.Config{Providers: r.dns})
	_, err = noZone.Create(ctx, 1, certs.NewCertificate{DomainName: "c.example", AcctID: acct.ID, ValidationMethod: "dns-01-delegation"})
	wantErr(t, err, apperr.Invalid, "validation.method", "dns-01-delegation is not enabled on this server: CERTFLEET_DELEGATION_ZONE is not set")
	method := "dns-01-delegation"
	_, err = noZone.Update(ctx, 1, plain.ID, certs.Changes{ValidationMethod: &method})
	wantErr(t, err, apperr.Invalid, "validation.method", "CERTFLEET_DELEGATION_ZONE is not set")
	policy := "MASTER_ONLY"
	if u, err := noZone.Update(ctx, 1, withZone.ID, certs.Changes{Policy: &policy}); err != nil || u.Validation.Method != method {
		t.Fatalf("existing delegation certificate: %+v %v", u, err)
	}
	// Without a DNS provider service dns-01-provider is unavailable.
	dns := r.dnsProvider(1, "cf")
	noProviders := certs.New(r.parts.Store, r.accts, certs.Config{DelegationZone: delegationZone})
	_, err = noProviders.Create(ctx, 1, certs.NewCertificate{DomainName: "d.example", AcctID: acct.ID, ValidationMethod: "dns-01-provider", DNSProviderID: dns.ID})
	wantErr(t, err, apperr.Invalid, "validation.method", "not available on this server")
}

func TestDelegationCNAMEs(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(3, "cname@example.com")
	c, err := r.svc.Create(ctx, 3, certs.NewCertificate{SANs: []string{"*.example.org", "example.org", "www.example.net"},
		AcctID: acct.ID, ValidationMethod: "dns-01-delegation"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.svc.DelegationCNAMEs(c)
	want := []certs.DelegationCNAME{
		{Name: "_acme-challenge.example.org", Target: certs.DelegationTarget(delegationZone, 3, "example.org")},
		{Name: "_acme-challenge.www.example.net", Target: certs.DelegationTarget(delegationZone, 3, "www.example.net")},
	}
	if !reflect.DeepEqual(got, want) || !strings.HasSuffix(got[0].Target, "."+delegationZone) || got[0].Target == got[1].Target {
		t.Fatalf("CNAMEs %+v\nwant %+v", got, want)
	}
	if r.svc.DelegationZone() != delegationZone {
		t.Fatalf("zone %q", r.svc.DelegationZone())
	}
	plain, err := r.svc.Create(ctx, 3, certs.NewCertificate{DomainName: "p.example.org", AcctID: acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	if cn := r.svc.DelegationCNAMEs(plain); cn != nil {
		t.Fatalf("http-01 certificate's CNAMEs: %v", cn)
	}
	if cn := certs.New(r.parts.Store, r.accts, certs.Config{}).DelegationCNAMEs(c); cn != nil {
		t.Fatalf("CNAMEs without a zone: %v", cn)
	}
}

// A change of a certificate's key distribution (policy or
// server_decrypt_export) calls OnKeyPolicyChange once, after it is
// stored; other changes and no-op updates do not.
func TestUpdateReportsKeyPolicyChanges(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	acct := r.account(1, "policy@example.com")
	var seen []string // the stored policy and export flag at each call
	svc := certs.New(r.parts.Store, r.accts, certs.Config{Providers: r.dns, OnKeyPolicyChange: func(ctx context.Context, userID, certID int64) error {
		got, err := r.svc.Get(ctx, userID, certID)
		if err != nil {
			t.Error(err)
		}
		seen = append(seen, fmt.Sprint(got.Policy, " ", got.ServerDecryptExport))
		return nil
	}})
	c, err := svc.Create(ctx, 1, certs.NewCertificate{DomainName: "policy.example", AcctID: acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		ch   certs.Changes
		want string
	}{
		{certs.Changes{SANs: &[]string{"www.policy.example"}}, ""},
		{certs.Changes{Policy: new(certs.PolicyMasterOnly)}, "MASTER_ONLY false"},
		{certs.Changes{Policy: new(certs.PolicyMasterOnly)}, ""},
		{certs.Changes{ServerDecryptExport: new(true)}, "MASTER_ONLY true"},
	} {
		seen = nil
		if _, err := svc.Update(ctx, 1, c.ID, step.ch); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(seen, ","); got != step.want {
			t.Fatalf("after %+v the hook saw %q; want %q", step.ch, got, step.want)
		}
	}
}
