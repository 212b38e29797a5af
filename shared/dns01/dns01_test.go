package dns01_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/dns01"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/issuance"
)

// TestMain lets lego's exec provider run this test binary as its program
// (pebbletest.ExecProviderMain), writing into pebble-challtestsrv.
func TestMain(m *testing.M) {
	pebbletest.ExecProviderMain()
	os.Exit(m.Run())
}

const zone = "acme.certfleet.test"

func value(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// hermeticLego keeps lego off the machine's DNS: its providers follow
// CNAMEs at the record name with the system's resolvers, which know
// nothing of the test names (they live in pebble-challtestsrv only).
func hermeticLego(t *testing.T) {
	t.Setenv("LEGO_DISABLE_CNAME_SUPPORT", "true")
}

// newDelegation starts pebble-challtestsrv and a delegation solver whose
// provider is lego's exec provider, run as this test binary.
func newDelegation(t *testing.T) (*pebbletest.ChallTestSrv, issuance.Solver) {
	t.Helper()
	srv := pebbletest.StartChallTestSrv(t)
	for k, v := range srv.ExecEnv(t) {
		t.Setenv(k, v)
	}
	sv, err := dns01.NewDelegationSolver(zone, "exec", []string{srv.DNSAddr})
	if err != nil {
		t.Fatal(err)
	}
	return srv, sv
}

func ready(t *testing.T, sv issuance.Solver, p issuance.Presentation) bool {
	t.Helper()
	ok, err := sv.Ready(context.Background(), p)
	if err != nil {
		t.Fatalf("Ready(%s): %v", p.Domain, err)
	}
	return ok
}

func equalSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestDelegationPresentReadyCleanUp(t *testing.T) {
	srv, sv := newDelegation(t)
	ctx := context.Background()
	p := issuance.Presentation{UserID: 7, Method: issuance.MethodDNS01Delegation, Domain: "www.example.test", Token: "tok1", KeyAuth: "tok1.thumbprint"}
	target := certs.DelegationTarget(zone, 7, p.Domain)
	srv.SetCNAME(t, "_acme-challenge.www.example.test", target)

	if ready(t, sv, p) {
		t.Fatal("Ready before Present")
	}
	start := time.Now()
	if err := sv.Present(ctx, p); err != nil {
		t.Fatalf("Present: %v", err)
	}
	t.Logf("Present (CNAME check + exec provider) took %v", time.Since(start))
	if !ready(t, sv, p) {
		t.Fatal("not Ready after Present")
	}
	if got := srv.LookupTXT(t, target); !slices.Equal(got, []string{value(p.KeyAuth)}) {
		t.Fatalf("TXT at the target %s = %q, want the answer only", target, got)
	}
	// What the CA sees: the user's name, through the CNAME.
	if got := srv.LookupTXT(t, "_acme-challenge.www.example.test"); !slices.Equal(got, []string{value(p.KeyAuth)}) {
		t.Fatalf("TXT through the CNAME = %q", got)
	}
	if err := sv.Present(ctx, p); err != nil {
		t.Fatalf("second Present: %v", err)
	}
	if !ready(t, sv, p) {
		t.Fatal("not Ready after a second Present")
	}

	if err := sv.CleanUp(ctx, p); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}
	if ready(t, sv, p) {
		t.Fatal("still Ready after CleanUp")
	}
	if got := srv.LookupTXT(t, target); len(got) != 0 {
		t.Fatalf("TXT at the target after CleanUp = %q", got)
	}
	if err := sv.CleanUp(ctx, p); err != nil {
		t.Fatalf("CleanUp of a removed answer: %v", err)
	}
}

func TestDelegationWildcardAndApex(t *testing.T) {
	srv, sv := newDelegation(t)
	ctx := context.Background()
	apex := issuance.Presentation{UserID: 7, Domain: "both.example.test", Token: "t-apex", KeyAuth: "t-apex.thumb"}
	wild := issuance.Presentation{UserID: 7, Domain: "both.example.test", Wildcard: true, Token: "t-wild", KeyAuth: "t-wild.thumb"}
	target := certs.DelegationTarget(zone, 7, "both.example.test")
	if wt := certs.DelegationTarget(zone, 7, "*.both.example.test"); wt != target {
		t.Fatalf("a wildcard's target %s differs from its apex's %s", wt, target)
	}
	srv.SetCNAME(t, "_acme-challenge.both.example.test", target)

	for _, p := range []issuance.Presentation{apex, wild} {
		if err := sv.Present(ctx, p); err != nil {
			t.Fatalf("Present(wildcard=%v): %v", p.Wildcard, err)
		}
	}
	for _, p := range []issuance.Presentation{apex, wild} {
		if !ready(t, sv, p) {
			t.Fatalf("wildcard=%v not Ready with both answers presented", p.Wildcard)
		}
	}
	want := []string{value(apex.KeyAuth), value(wild.KeyAuth)}
	if got := srv.LookupTXT(t, target); !equalSet(got, want) {
		t.Fatalf("TXT at %s = %q, want both %q", target, got, want)
	}
	if got := srv.LookupTXT(t, "_acme-challenge.both.example.test"); !equalSet(got, want) {
		t.Fatalf("TXT through the CNAME = %q, want both %q", got, want)
	}
}

func TestDelegationCNAMECheck(t *testing.T) {
	srv, sv := newDelegation(t)
	ctx := context.Background()
	const user = 7

	t.Run("missing", func(t *testing.T) {
		p := issuance.Presentation{UserID: user, Domain: "nocname.example.test", Token: "t", KeyAuth: "t.k"}
		target := certs.DelegationTarget(zone, user, p.Domain)
		// A TXT record where the CNAME belongs is no CNAME.
		srv.SetTXT(t, "_acme-challenge.nocname.example.test", "stale")
		err := sv.Present(ctx, p)
		want := fmt.Sprintf("add a CNAME record _acme-challenge.nocname.example.test → %s (found: none)", target)
		if apperr.CodeOf(err) != apperr.Invalid || apperr.MessageOf(err) != want {
			t.Fatalf("Present = %v (%s), want Invalid %q", err, apperr.CodeOf(err), want)
		}
		if got := srv.LookupTXT(t, target); len(got) != 0 {
			t.Fatalf("wrote %q at the target without the CNAME", got)
		}
	})

	t.Run("another user's target", func(t *testing.T) {
		// The user points the name at the label certfleet keeps for user 8's
		// victim.example.test; certfleet must not write there for user 7.
		p := issuance.Presentation{UserID: user, Domain: "victim.example.test", Token: "t", KeyAuth: "t.attacker"}
		own := certs.DelegationTarget(zone, user, p.Domain)
		other := certs.DelegationTarget(zone, 8, p.Domain)
		srv.SetCNAME(t, "_acme-challenge.victim.example.test", other)
		err := sv.Present(ctx, p)
		want := fmt.Sprintf("add a CNAME record _acme-challenge.victim.example.test → %s (found: CNAME → %s)", own, other)
		if apperr.CodeOf(err) != apperr.Invalid || apperr.MessageOf(err) != want {
			t.Fatalf("Present = %v, want Invalid %q", err, want)
		}
		for _, name := range []string{own, other} {
			if got := srv.LookupTXT(t, name); len(got) != 0 {
				t.Fatalf("wrote %q at %s", got, name)
			}
		}
	})

	t.Run("CNAME inside the zone at the target", func(t *testing.T) {
		// An operator's mistake: lego would follow it; Present refuses.
		p := issuance.Presentation{UserID: user, Domain: "redirected.example.test", Token: "t", KeyAuth: "t.k"}
		target := certs.DelegationTarget(zone, user, p.Domain)
		srv.SetCNAME(t, "_acme-challenge.redirected.example.test", target)
		srv.SetCNAME(t, target, "_acme-challenge.elsewhere.example.test")
		err := sv.Present(ctx, p)
		if err == nil || apperr.CodeOf(err) != apperr.Internal || !strings.Contains(err.Error(), "delegation zone") {
			t.Fatalf("Present = %v (%s), want a transient error about the delegation zone", err, apperr.CodeOf(err))
		}
		if got := srv.LookupTXT(t, "_acme-challenge.elsewhere.example.test"); len(got) != 0 {
			t.Fatalf("wrote %q behind the zone's CNAME", got)
		}
	})
}

func TestNewDelegationSolverErrors(t *testing.T) {
	t.Setenv("EXEC_PATH", "")
	for _, tc := range []struct{ zone, code, want string }{
		{"", "exec", "no zone"},
		{zone, "", "no DNS provider"},
		{zone, "manual", "manual"},
		{zone, "no-such-provider", "unrecognized DNS provider"},
		{zone, "exec", "EXEC_PATH"},
	} {
		sv, err := dns01.NewDelegationSolver(tc.zone, tc.code, []string{"127.0.0.1:53"})
		if err == nil || sv != nil || !strings.HasPrefix(err.Error(), "dns01: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewDelegationSolver(%q, %q) = %v, %v; want an error about %q", tc.zone, tc.code, sv, err, tc.want)
		}
	}
}

// creds is a DNSCredentials with one stored provider per id.
type creds struct {
	mu     sync.Mutex
	stored map[int64]stored
	opened int
}

type stored struct {
	code     string
	settings map[string]string
	err      error
}

func (c *creds) Open(_ context.Context, userID, providerID int64) (string, map[string]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opened++
	s, ok := c.stored[providerID]
	if !ok || userID != 7 {
		return "", nil, apperr.New(apperr.NotFound, "DNS provider %d not found", providerID)
	}
	return s.code, maps.Clone(s.settings), s.err
}

func environ() []string {
	env := os.Environ()
	slices.Sort(env)
	return env
}

func TestProviderSolverRefusals(t *testing.T) {
	hermeticLego(t)
	t.Setenv("EXEC_PATH", "/bin/true") // as if the operator had set it: never for users
	cases := []struct {
		name   string
		s      stored
		id     int64
		code   apperr.Code
		substr string
	}{
		{"exec", stored{code: "exec", settings: map[string]string{"EXEC_PATH": "/bin/sh"}}, 1, apperr.Invalid, `"exec" is not available here`},
		{"EXEC", stored{code: "EXEC"}, 1, apperr.Invalid, "not available here"},
		{"manual", stored{code: "manual"}, 1, apperr.Invalid, `"manual" is not available here`},
		{"unknown", stored{code: "no-such-dns"}, 1, apperr.Invalid, `unknown DNS provider "no-such-dns"`},
		{"empty code", stored{code: ""}, 1, apperr.Invalid, "no provider code"},
		{"_FILE key", stored{code: "cloudflare", settings: map[string]string{"CLOUDFLARE_DNS_API_TOKEN_FILE": "/etc/passwd"}}, 1, apperr.Invalid, "CLOUDFLARE_DNS_API_TOKEN_FILE names a file"},
		{"_PATH key", stored{code: "transip", settings: map[string]string{"TRANSIP_ACCOUNT_NAME": "a", "TRANSIP_PRIVATE_KEY_PATH": "/etc/shadow"}}, 1, apperr.Invalid, "TRANSIP_PRIVATE_KEY_PATH names a file"},
		{"process variable", stored{code: "cloudflare", settings: map[string]string{"HTTPS_PROXY": "http://evil.test"}}, 1, apperr.Invalid, "HTTPS_PROXY is not allowed"},
		{"lego switch", stored{code: "cloudflare", settings: map[string]string{"LEGO_DISABLE_CNAME_SUPPORT": "false"}}, 1, apperr.Invalid, "LEGO_DISABLE_CNAME_SUPPORT is not allowed"},
		{"lower-case key", stored{code: "cloudflare", settings: map[string]string{"cf_token": "x"}}, 1, apperr.Invalid, "not an upper-case variable name"},
		{"missing credentials", stored{code: "cloudflare"}, 1, apperr.Invalid, `DNS provider "cloudflare" refused its settings: cloudflare: some credentials information are missing`},
		{"no stored provider", stored{}, 0, apperr.Invalid, "no stored DNS provider"},
		{"another user's provider", stored{code: "cloudflare"}, 99, apperr.NotFound, "not found"},
		{"credentials store down", stored{code: "cloudflare", err: errors.New("store: timeout")}, 1, apperr.Internal, "store: timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &creds{stored: map[int64]stored{1: tc.s}}
			sv := dns01.NewProviderSolver(c, []string{"127.0.0.1:53"})
			p := issuance.Presentation{UserID: 7, Domain: "refused.example.test", Token: "t", KeyAuth: "t.k", DNSProviderID: tc.id}
			before := environ()
			for op, call := range map[string]func(context.Context, issuance.Presentation) error{"Present": sv.Present, "CleanUp": sv.CleanUp} {
				err := call(context.Background(), p)
				msg := apperr.MessageOf(err)
				if tc.code == apperr.Internal {
					msg = fmt.Sprint(err)
				}
				if apperr.CodeOf(err) != tc.code || !strings.Contains(msg, tc.substr) {
					t.Errorf("%s = %v (%s), want %s containing %q", op, err, apperr.CodeOf(err), tc.code, tc.substr)
				}
			}
			if after := environ(); !slices.Equal(before, after) {
				t.Errorf("the environment changed:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// httpreqAPI is an endpoint for lego's httpreq provider (the user's "own
// DNS API"): it writes into pebble-challtestsrv and records the basic-auth
// user of every request ("" without one).
type httpreqAPI struct {
	*httptest.Server
	mu    sync.Mutex
	users []string
}

func newHTTPReqAPI(t *testing.T, srv *pebbletest.ChallTestSrv) *httpreqAPI {
	api := &httpreqAPI{}
	api.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, _, _ := r.BasicAuth()
		api.mu.Lock()
		api.users = append(api.users, user)
		api.mu.Unlock()
		var msg struct{ FQDN, Value string }
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var path string
		var body any
		switch r.URL.Path {
		case "/present":
			path, body = "/set-txt", map[string]string{"host": msg.FQDN, "value": msg.Value}
		case "/cleanup":
			path, body = "/clear-txt", map[string]string{"host": msg.FQDN}
		default:
			http.NotFound(w, r)
			return
		}
		raw, _ := json.Marshal(body)
		resp, err := http.Post(srv.ManagementURL+path, "application/json", bytes.NewReader(raw))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	}))
	t.Cleanup(api.Close)
	return api
}

func (a *httpreqAPI) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.users)
}

func TestProviderSolverHTTPReq(t *testing.T) {
	srv := pebbletest.StartChallTestSrv(t)
	api := newHTTPReqAPI(t, srv)
	hermeticLego(t)
	// certfleet's own environment: must not reach a user's provider.
	t.Setenv("HTTPREQ_USERNAME", "certfleet-itself")
	t.Setenv("HTTPREQ_PASSWORD", "ambient-secret")
	t.Setenv("CERTFLEET_SENTINEL", "kept")

	c := &creds{stored: map[int64]stored{
		1: {code: "httpreq", settings: map[string]string{"HTTPREQ_ENDPOINT": api.URL, "HTTPREQ_USERNAME": "alice", "HTTPREQ_PASSWORD": "s3cret"}},
		2: {code: "httpreq", settings: map[string]string{"HTTPREQ_ENDPOINT": api.URL}},
	}}
	sv := dns01.NewProviderSolver(c, []string{srv.DNSAddr})
	ctx := context.Background()
	p := issuance.Presentation{UserID: 7, Method: issuance.MethodDNS01Provider, Domain: "own.example.test", Token: "t", KeyAuth: "t.thumb", DNSProviderID: 1}
	before := environ()

	if ready(t, sv, p) {
		t.Fatal("Ready before Present")
	}
	if err := sv.Present(ctx, p); err != nil {
		t.Fatalf("Present: %v", err)
	}
	if !ready(t, sv, p) {
		t.Fatal("not Ready after Present")
	}
	if got := srv.LookupTXT(t, "_acme-challenge.own.example.test"); !slices.Equal(got, []string{value(p.KeyAuth)}) {
		t.Fatalf("TXT = %q", got)
	}
	if err := sv.CleanUp(ctx, p); err != nil {
		t.Fatalf("CleanUp: %v", err)
	}
	if ready(t, sv, p) {
		t.Fatal("still Ready after CleanUp")
	}

	// Settings without a user name: the provider sends none, rather than
	// the process's HTTPREQ_USERNAME.
	p2 := p
	p2.DNSProviderID, p2.Domain = 2, "anon.example.test"
	if err := sv.Present(ctx, p2); err != nil {
		t.Fatalf("Present without a user name: %v", err)
	}
	if got, want := api.seen(), []string{"alice", "alice", ""}; !slices.Equal(got, want) {
		t.Fatalf("the API saw basic-auth users %q, want %q", got, want)
	}
	if c.opened != 3 {
		t.Fatalf("credentials opened %d times for 3 provider calls; want one open per call (nothing cached)", c.opened)
	}
	if after := environ(); !slices.Equal(before, after) {
		t.Fatalf("the environment changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestSolversConcurrently runs provider constructions (environment swaps)
// alongside delegation Presents through exec, whose child process must
// still inherit the real environment (its PEBBLETEST_EXEC_CHALLTESTSRV).
func TestSolversConcurrently(t *testing.T) {
	srv, del := newDelegation(t)
	api := newHTTPReqAPI(t, srv)
	c := &creds{stored: map[int64]stored{1: {code: "httpreq", settings: map[string]string{"HTTPREQ_ENDPOINT": api.URL}}}}
	prov := dns01.NewProviderSolver(c, []string{srv.DNSAddr})
	before := environ()
	ctx := context.Background()

	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	var presented []issuance.Presentation
	for i := range n {
		d := issuance.Presentation{UserID: 7, Domain: fmt.Sprintf("del%d.example.test", i), Token: "t", KeyAuth: fmt.Sprintf("del%d.k", i)}
		srv.SetCNAME(t, "_acme-challenge."+d.Domain, certs.DelegationTarget(zone, 7, d.Domain))
		pr := issuance.Presentation{UserID: 7, Domain: fmt.Sprintf("prov%d.example.test", i), Token: "t", KeyAuth: fmt.Sprintf("prov%d.k", i), DNSProviderID: 1}
		presented = append(presented, d, pr)
		wg.Add(2)
		go func() { defer wg.Done(); errs <- del.Present(ctx, d) }()
		go func() { defer wg.Done(); errs <- prov.Present(ctx, pr) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i, p := range presented {
		sv := prov
		if i%2 == 0 {
			sv = del
		}
		if !ready(t, sv, p) {
			t.Errorf("%s not Ready", p.Domain)
		}
	}
	if after := environ(); !slices.Equal(before, after) {
		t.Fatalf("the environment changed:\nbefore %q\nafter  %q", before, after)
	}
}

func TestProviderReadyFollowsCNAMEs(t *testing.T) {
	srv := pebbletest.StartChallTestSrv(t)
	sv := dns01.NewProviderSolver(&creds{}, []string{srv.DNSAddr})
	p := issuance.Presentation{UserID: 7, Domain: "alias.example.test", KeyAuth: "t.k", DNSProviderID: 1}
	// Two CNAMEs: pebble-challtestsrv follows only the first itself, so the
	// solver asks again for the second's target.
	srv.SetCNAME(t, "_acme-challenge.alias.example.test", "hop.dnshost.test")
	srv.SetCNAME(t, "hop.dnshost.test", "_acme-challenge.alias.dnshost.test")
	srv.SetTXT(t, "_acme-challenge.alias.dnshost.test", "other")
	if ready(t, sv, p) {
		t.Fatal("Ready with another value only")
	}
	srv.SetTXT(t, "_acme-challenge.alias.dnshost.test", value(p.KeyAuth))
	if !ready(t, sv, p) {
		t.Fatal("not Ready through two CNAMEs")
	}
}

func TestReadyResolvers(t *testing.T) {
	srv := pebbletest.StartChallTestSrv(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	p := issuance.Presentation{UserID: 7, Domain: "res.example.test", KeyAuth: "t.k", DNSProviderID: 1}
	srv.SetTXT(t, "_acme-challenge.res.example.test", value(p.KeyAuth))

	start := time.Now()
	_, err = dns01.NewProviderSolver(&creds{}, []string{closed}).Ready(context.Background(), p)
	if err == nil || apperr.CodeOf(err) != apperr.Internal {
		t.Fatalf("Ready with a dead resolver = %v, want a transient error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a dead resolver took %v", d)
	}
	if !ready(t, dns01.NewProviderSolver(&creds{}, []string{closed, srv.DNSAddr}), p) {
		t.Fatal("not Ready with a dead resolver before a live one")
	}
}

// TestUserRoute53GetsNoAmbientAWSCredentials: a user's route53 settings
// without keys must not fall back to certfleet's own AWS credentials (the
// environment's, the shared files, the instance role). The AWS API is a
// closed loopback port, so nothing leaves the machine: with credentials
// the call fails to connect, without them it fails before that.
func TestUserRoute53GetsNoAmbientAWSCredentials(t *testing.T) {
	hermeticLego(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIACERTFLEETITSELF")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "certfleet-own-secret")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	l.Close()
	base := map[string]string{"AWS_REGION": "us-east-1", "AWS_HOSTED_ZONE_ID": "Z123", "AWS_MAX_RETRIES": "1", "AWS_ENDPOINT_URL": endpoint}
	withKeys := maps.Clone(base)
	withKeys["AWS_ACCESS_KEY_ID"], withKeys["AWS_SECRET_ACCESS_KEY"] = "AKIAUSER", "user-secret"
	c := &creds{stored: map[int64]stored{1: {code: "route53", settings: base}, 2: {code: "route53", settings: withKeys}}}
	sv := dns01.NewProviderSolver(c, []string{"127.0.0.1:53"})
	p := issuance.Presentation{UserID: 7, Domain: "r53.example.test", Token: "t", KeyAuth: "t.k"}

	p.DNSProviderID = 2
	err = sv.Present(context.Background(), p)
	if err == nil || apperr.CodeOf(err) != apperr.Internal || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("route53 with the user's keys: %v; want a transient connection error", err)
	}
	p.DNSProviderID = 1
	err = sv.Present(context.Background(), p)
	if err == nil || apperr.CodeOf(err) != apperr.Internal || strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("route53 without keys: %v; want a credentials error before any request", err)
	}
	t.Logf("route53 without keys: %v", err)
}
