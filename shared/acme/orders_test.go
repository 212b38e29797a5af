package acme_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/go-acme/lego/v4/acme/api"
)

// ---------------------------------------------------------------------
// The Pebble rig: Pebble, an in-test DNS server that answers 127.0.0.1 for
// every name (so any test name is valid, whatever /etc/hosts says), an
// in-test HTTP-01 responder, and a registered account.

type rig struct {
	pebble *pebbletest.Pebble
	client *acme.Client
	acct   issuance.Account
	http01 *responder
	// retryAfters are the non-zero Retry-After values seen while polling.
	mu          sync.Mutex
	retryAfters []string
}

func startRig(tb testing.TB) *rig {
	tb.Helper()
	r := &rig{http01: startResponder(tb)}
	r.pebble = pebbletest.Start(tb, pebbletest.Options{HTTPPort: r.http01.port, DNSServer: pebbletest.StartDNS(tb)})
	c, err := acme.New(acme.Config{RootsPEMFile: r.pebble.RootsPEMFile, Timeout: 20 * time.Second, UserAgent: "certfleet-test"})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	r.client = c
	r.acct = r.register(tb)
	return r
}

func (r *rig) register(tb testing.TB) issuance.Account {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	u, err := r.client.Register(context.Background(), acmeacct.Registration{DirectoryURL: r.pebble.DirectoryURL, Key: key})
	if err != nil {
		tb.Fatalf("Register: %v", err)
	}
	return issuance.Account{DirectoryURL: r.pebble.DirectoryURL, URL: u, Key: key}
}

// responder serves /.well-known/acme-challenge/<token>.
type responder struct {
	port   int
	tokens sync.Map // token → body
	hits   atomic.Int32
}

func startResponder(tb testing.TB) *responder {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &responder{port: l.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		token, ok := strings.CutPrefix(req.URL.Path, "/.well-known/acme-challenge/")
		body, found := r.tokens.Load(token)
		if !ok || !found {
			http.NotFound(w, req)
			return
		}
		_, _ = io.WriteString(w, body.(string))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return r
}

// ---------------------------------------------------------------------
// The issuance flow, driven only through the port.

type flow struct {
	names       []string
	profile     string
	poll        time.Duration // sleep between polls without Retry-After
	wrongKeyAuz bool          // serve a wrong key authorization
}

type issued struct {
	order  issuance.Order // the valid order
	authzs []issuance.Authorization
	cert   issuance.Certificate
	chain  []*x509.Certificate
	// failed is the authorization that went invalid (then nothing else is set).
	failed *issuance.Authorization
}

func (r *rig) wait(ctx context.Context, ra, poll time.Duration, what string) error {
	d := poll
	if ra > 0 {
		r.mu.Lock()
		r.retryAfters = append(r.retryAfters, what+": "+ra.String())
		r.mu.Unlock()
		d = ra
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (r *rig) issue(tb testing.TB, f flow) issued {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, acct := r.client, r.acct
	if f.poll == 0 {
		f.poll = 20 * time.Millisecond
	}
	var out issued

	o, err := c.NewOrder(ctx, acct, issuance.OrderRequest{Names: f.names, Profile: f.profile})
	if err != nil {
		tb.Fatalf("NewOrder: %v", err)
	}
	orderURL := o.URL
	if o.Status != "pending" && o.Status != "ready" {
		tb.Fatalf("new order status %q", o.Status)
	}

	// present + accept
	var pending []string
	for _, az := range o.Authorizations {
		a, err := c.GetAuthorization(ctx, acct, az)
		if err != nil {
			tb.Fatalf("GetAuthorization: %v", err)
		}
		if a.Status == "valid" {
			continue
		}
		i := slices.IndexFunc(a.Challenges, func(ch issuance.Challenge) bool { return ch.Type == "http-01" })
		if i < 0 {
			tb.Fatalf("authorization %s has no http-01 challenge: %+v", az, a)
		}
		ch := a.Challenges[i]
		ka, err := c.KeyAuthorization(acct, ch.Token)
		if err != nil {
			tb.Fatalf("KeyAuthorization: %v", err)
		}
		if f.wrongKeyAuz {
			ka = ch.Token + ".not-the-thumbprint"
		}
		r.http01.tokens.Store(ch.Token, ka)
		if _, err := c.AcceptChallenge(ctx, acct, ch.URL); err != nil {
			tb.Fatalf("AcceptChallenge: %v", err)
		}
		pending = append(pending, az)
	}

	// poll the authorizations
	for _, az := range pending {
		for {
			a, err := c.GetAuthorization(ctx, acct, az)
			if err != nil {
				tb.Fatalf("GetAuthorization: %v", err)
			}
			if a.Status == "invalid" {
				out.failed = &a
				return out
			}
			if a.Status == "valid" {
				out.authzs = append(out.authzs, a)
				break
			}
			if a.Status != "pending" {
				tb.Fatalf("authorization %s: status %q", az, a.Status)
			}
			if err := r.wait(ctx, a.RetryAfter, f.poll, "authz"); err != nil {
				tb.Fatalf("authorization %s still pending: %v", az, err)
			}
		}
	}

	// poll the order until ready; with every authorization valid it
	// should be at once
	for o.Status != "ready" {
		if o, err = c.GetOrder(ctx, acct, orderURL); err != nil {
			tb.Fatalf("GetOrder: %v", err)
		}
		if o.Status == "ready" {
			break
		}
		if o.Status != "pending" {
			tb.Fatalf("order %s: status %q (%v)", orderURL, o.Status, o.Error)
		}
		if err := r.wait(ctx, o.RetryAfter, f.poll, "order"); err != nil {
			tb.Fatalf("order %s not ready: %v", orderURL, err)
		}
	}

	// finalize
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: f.names}, certKey)
	if err != nil {
		tb.Fatal(err)
	}
	if o, err = c.Finalize(ctx, acct, o.FinalizeURL, csr); err != nil {
		tb.Fatalf("Finalize: %v", err)
	}
	for o.Status != "valid" {
		if o.Status != "processing" && o.Status != "ready" {
			tb.Fatalf("finalized order %s: status %q (%v)", orderURL, o.Status, o.Error)
		}
		if err := r.wait(ctx, o.RetryAfter, f.poll, "finalized order"); err != nil {
			tb.Fatalf("order %s not valid: %v", orderURL, err)
		}
		if o, err = c.GetOrder(ctx, acct, orderURL); err != nil {
			tb.Fatalf("GetOrder: %v", err)
		}
	}
	out.order = o

	if out.cert, err = c.Download(ctx, acct, o.CertificateURL, ""); err != nil {
		tb.Fatalf("Download: %v", err)
	}
	out.chain = parseChain(tb, out.cert.ChainPEM)
	return out
}

func parseChain(tb testing.TB, chainPEM []byte) []*x509.Certificate {
	tb.Helper()
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			tb.Fatalf("chain: %v", err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		tb.Fatalf("no certificate in the chain:\n%s", chainPEM)
	}
	return chain
}

// checkIssued checks the leaf's names and that Pebble's intermediate
// issued it, up to Pebble's issuing root.
func (r *rig) checkIssued(t *testing.T, got issued, names []string) {
	t.Helper()
	leaf := got.chain[0]
	if !reflect.DeepEqual(sorted(leaf.DNSNames), sorted(names)) {
		t.Errorf("leaf names %q, want %q", leaf.DNSNames, names)
	}
	inter := parseChain(t, r.pebble.IssuerIntermediatePEM(t))[0]
	if len(got.chain) < 2 || !got.chain[1].Equal(inter) {
		t.Errorf("chain[1] is not Pebble's intermediate %q", inter.Subject)
	}
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Errorf("leaf not signed by Pebble's intermediate: %v", err)
	}
	pool := x509.NewCertPool()
	for _, c := range got.chain[1:] {
		pool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.pebble.IssuerRoots(t), Intermediates: pool, DNSName: names[0]}); err != nil {
		t.Errorf("leaf does not verify up to Pebble's root: %v", err)
	}
}

func (r *rig) logRetryAfters(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.retryAfters) == 0 {
		t.Log("Pebble sent no Retry-After on any polled order or authorization")
		return
	}
	t.Logf("Retry-After seen: %q", r.retryAfters)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// ---------------------------------------------------------------------
// Against Pebble.

func TestIssueAndRevoke(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	names := []string{"one.certfleet.test"}
	got := r.issue(t, flow{names: names})
	if got.failed != nil {
		t.Fatalf("authorization invalid: %+v", got.failed)
	}
	r.checkIssued(t, got, names)
	r.logRetryAfters(t)

	o := got.order
	if o.URL == "" || o.FinalizeURL == "" || o.CertificateURL == "" || len(o.Authorizations) != 1 || o.Expires.IsZero() || o.Error != nil {
		t.Errorf("valid order not fully mapped: %+v", o)
	}
	a := got.authzs[0]
	if a.URL != o.Authorizations[0] || a.Identifier != names[0] || a.Wildcard || len(a.Challenges) == 0 {
		t.Errorf("valid authorization not fully mapped: %+v", a)
	}
	for _, ch := range a.Challenges {
		if ch.Type == "http-01" && (ch.Status != "valid" || ch.URL == "" || ch.Token == "" || ch.Error != nil) {
			t.Errorf("validated challenge: %+v", ch)
		}
	}
	if len(got.cert.Alternates) != 0 {
		t.Errorf("Alternates = %q; pebbletest starts Pebble without alternate roots", got.cert.Alternates)
	}

	ctx := context.Background()
	if err := r.client.Revoke(ctx, r.acct, got.chain[0].Raw, 1); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	err := r.client.Revoke(ctx, r.acct, got.chain[0].Raw, 1)
	prob := asProblem(t, err)
	if prob.Type != problemNS+"alreadyRevoked" || prob.Status != http.StatusBadRequest {
		t.Errorf("second Revoke: %+v, want alreadyRevoked 400", prob)
	}
}

func TestIssueSAN(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	names := []string{"san-a.certfleet.test", "san-b.certfleet.test"}
	got := r.issue(t, flow{names: names})
	if got.failed != nil {
		t.Fatalf("authorization invalid: %+v", got.failed)
	}
	r.checkIssued(t, got, names)
	if len(got.order.Authorizations) != 2 {
		t.Errorf("order has %d authorizations, want 2", len(got.order.Authorizations))
	}
	var ids []string
	for _, a := range got.authzs {
		ids = append(ids, a.Identifier)
	}
	if !reflect.DeepEqual(sorted(ids), sorted(names)) {
		t.Errorf("authorization identifiers %q, want %q", ids, names)
	}
	if r.http01.hits.Load() < 2 {
		t.Errorf("responder answered %d requests, want at least 2", r.http01.hits.Load())
	}
	r.logRetryAfters(t)
}

// Replaces (ARI, RFC 9773 §5) is sent: Pebble checks it against the
// certificates it issued to the account.
func TestNewOrderReplaces(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	names := []string{"renew.certfleet.test"}
	got := r.issue(t, flow{names: names})
	if got.failed != nil {
		t.Fatalf("authorization invalid: %+v", got.failed)
	}
	leaf := got.chain[0]
	serial := leaf.SerialNumber.Bytes()
	if len(serial) > 0 && serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...)
	}
	certID := base64.RawURLEncoding.EncodeToString(leaf.AuthorityKeyId) + "." + base64.RawURLEncoding.EncodeToString(serial)

	ctx := context.Background()
	o, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: names, Replaces: certID})
	if err != nil {
		t.Fatalf("NewOrder replacing %s: %v", certID, err)
	}
	if o.Status != "pending" && o.Status != "ready" {
		t.Errorf("replacing order: %+v", o)
	}

	// Another account may not replace it; a malformed id is refused. (An
	// id Pebble never issued is a 500 serverInternal from Pebble v2.10.1:
	// transient by the port's rule.)
	_, err = r.client.NewOrder(ctx, r.register(t), issuance.OrderRequest{Names: names, Replaces: certID})
	if prob := asProblem(t, err); prob.Type != unauthorized || prob.Status != http.StatusForbidden {
		t.Errorf("another account replacing: %+v, want unauthorized 403", prob)
	}
	_, err = r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: names, Replaces: "not-a-cert-id"})
	if prob := asProblem(t, err); prob.Type != malformed || prob.Status != http.StatusBadRequest {
		t.Errorf("malformed replaces: %+v, want malformed 400", prob)
	}
}

func TestIssueProfile(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	meta, err := r.client.Directory(context.Background(), r.pebble.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := meta.Profiles["default"]; !ok {
		t.Fatalf("Pebble offers no profile %q: %v", "default", meta.Profiles)
	}
	names := []string{"profile.certfleet.test"}
	got := r.issue(t, flow{names: names, profile: "default"})
	if got.failed != nil {
		t.Fatalf("authorization invalid: %+v", got.failed)
	}
	r.checkIssued(t, got, names)

	_, err = r.client.NewOrder(context.Background(), r.acct, issuance.OrderRequest{Names: names, Profile: "no-such-profile"})
	prob := asProblem(t, err)
	if prob.Type != problemNS+"invalidProfile" || prob.Status != http.StatusBadRequest {
		t.Errorf("unknown profile: %+v, want invalidProfile 400", prob)
	}
}

func TestInvalidChallenge(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	got := r.issue(t, flow{names: []string{"wrong.certfleet.test"}, wrongKeyAuz: true})
	if got.failed == nil {
		t.Fatal("authorization valid with a wrong key authorization")
	}
	a := got.failed
	i := slices.IndexFunc(a.Challenges, func(ch issuance.Challenge) bool { return ch.Type == "http-01" })
	if i < 0 {
		t.Fatalf("invalid authorization without its http-01 challenge: %+v", a)
	}
	ch := a.Challenges[i]
	if ch.Status != "invalid" || ch.Error == nil {
		t.Fatalf("challenge %+v, want invalid with an error", ch)
	}
	t.Logf("challenge error: %d %v", ch.Error.Status, ch.Error)
	if ch.Error.Type != unauthorized || !strings.Contains(ch.Error.Detail, "did not match") || !strings.Contains(ch.Error.Detail, "not-the-thumbprint") {
		t.Errorf("challenge error %+v, want Pebble's unauthorized detail", ch.Error)
	}
}

func TestUnknownURLs(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	base := strings.TrimSuffix(r.pebble.DirectoryURL, "/dir")

	_, err := r.client.GetOrder(ctx, r.acct, base+"/my-order/made-up")
	prob := asProblem(t, err)
	if prob.Status != http.StatusNotFound || prob.Type != "about:blank" {
		t.Errorf("made-up order: %+v, want a 404 problem", prob)
	}
	_, err = r.client.GetAuthorization(ctx, r.acct, base+"/authZ/made-up")
	if prob := asProblem(t, err); prob.Status != http.StatusNotFound {
		t.Errorf("made-up authorization: %+v, want a 404 problem", prob)
	}
	_, err = r.client.Download(ctx, r.acct, base+"/certZ/made-up", "")
	if prob := asProblem(t, err); prob.Status != http.StatusNotFound {
		t.Errorf("made-up certificate: %+v, want a 404 problem", prob)
	}

	// Another account's order is refused (unauthorized), not hidden.
	o, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: []string{"mine.certfleet.test"}})
	if err != nil {
		t.Fatal(err)
	}
	other := r.register(t)
	_, err = r.client.GetOrder(ctx, other, o.URL)
	if prob := asProblem(t, err); prob.Type != unauthorized || prob.Status != http.StatusForbidden {
		t.Errorf("another account's order: %+v, want unauthorized 403", prob)
	}
}

// TestConcurrentCalls: one account's client serves 16 goroutines at once
// (its nonces and connection shared), each polling its own order and
// authorization. Each has its own order because Pebble v2.10.1
// deadlocks on concurrent reads of one order (its order handler read-locks
// the order twice while GetOrderByID write-locks it), which no real CA
// does and certfleet never does: an issue's steps run one at a time.
func TestConcurrentCalls(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	orders := make([]issuance.Order, 16)
	for i := range orders {
		o, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: []string{fmt.Sprintf("busy%d.certfleet.test", i)}})
		if err != nil {
			t.Fatal(err)
		}
		orders[i] = o
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(orders))
	for _, o := range orders {
		wg.Go(func() {
			for range 4 {
				got, err := r.client.GetOrder(ctx, r.acct, o.URL)
				if err != nil {
					errs <- err
					return
				}
				if got.Status != "pending" || got.URL != o.URL {
					errs <- fmt.Errorf("order %+v", got)
					return
				}
				if _, err := r.client.GetAuthorization(ctx, r.acct, o.Authorizations[0]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRefusedBeforeTheCAOrders(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	ctx := context.Background()
	acct := issuance.Account{DirectoryURL: "https://ca.invalid/dir", URL: "https://ca.invalid/acct/1", Key: p256(t)}
	ed, httpDir, noURL := acct, acct, acct
	ed.Key = nil
	httpDir.DirectoryURL = "http://ca.invalid/dir"
	noURL.URL = ""
	for name, call := range map[string]func() error{
		"no names":          func() error { _, err := c.NewOrder(ctx, acct, issuance.OrderRequest{}); return err },
		"http directory":    func() error { _, err := c.GetOrder(ctx, httpDir, acct.URL); return err },
		"no account URL":    func() error { _, err := c.GetOrder(ctx, noURL, acct.URL); return err },
		"no key":            func() error { _, err := c.GetOrder(ctx, ed, acct.URL); return err },
		"empty order URL":   func() error { _, err := c.GetOrder(ctx, acct, ""); return err },
		"http authz URL":    func() error { _, err := c.GetAuthorization(ctx, acct, "http://ca.invalid/a"); return err },
		"empty challenge":   func() error { _, err := c.AcceptChallenge(ctx, acct, ""); return err },
		"empty CSR":         func() error { _, err := c.Finalize(ctx, acct, "https://ca.invalid/f", nil); return err },
		"empty cert URL":    func() error { _, err := c.Download(ctx, acct, "", ""); return err },
		"no certificate":    func() error { return c.Revoke(ctx, acct, nil, 0) },
		"reason 7":          func() error { return c.Revoke(ctx, acct, []byte{1}, 7) },
		"reason -1":         func() error { return c.Revoke(ctx, acct, []byte{1}, -1) },
		"empty token":       func() error { _, err := c.KeyAuthorization(acct, ""); return err },
		"key authz, no key": func() error { _, err := c.KeyAuthorization(ed, "tok"); return err },
	} {
		err := call()
		var prob *acmeacct.Problem
		if !errors.As(err, &prob) || prob.Status != 0 {
			t.Errorf("%s: %v, want an *acmeacct.Problem with Status 0", name, err)
		}
	}
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ---------------------------------------------------------------------
// Against a stub CA: what Pebble (as pebbletest starts it) never does.

type stubCA struct {
	srv       *httptest.Server
	rootsFile string
	chains    map[string][]byte // path → chain PEM
	dirGets   atomic.Int32
	nonceHits atomic.Int32
	posts     atomic.Int32
	done      chan struct{} // closed when the test ends
}

func startStubCA(t *testing.T) *stubCA {
	t.Helper()
	s := &stubCA{chains: map[string][]byte{
		"/cert/1":       testChain(t, "A"),
		"/cert/1/alt/1": testChain(t, "B"),
		"/cert/1/alt/2": testChain(t, "C"),
	}}
	s.done = make(chan struct{})
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	t.Cleanup(func() { close(s.done) }) // runs first
	s.rootsFile = filepath.Join(t.TempDir(), "roots.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.rootsFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stubCA) account(t *testing.T) issuance.Account {
	return issuance.Account{DirectoryURL: s.srv.URL + "/dir", URL: s.srv.URL + "/acct/1", Key: p256(t)}
}

func (s *stubCA) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Replay-Nonce", fmt.Sprintf("n%d", time.Now().UnixNano()))
	if r.Method == http.MethodPost {
		s.posts.Add(1)
		// Read the JWS: the server notices a closed connection (and ends
		// r.Context) only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
	}
	order := func(status, extra string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":%q,"expires":"2030-01-02T03:04:05Z","identifiers":[{"type":"dns","value":"a.test"}],`+
			`"authorizations":[%q],"finalize":%q%s}`, status, s.srv.URL+"/authz/1", s.srv.URL+"/finalize/1", extra)
	}
	switch p := r.URL.Path; {
	case p == "/dir":
		s.dirGets.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"newNonce":%q,"newAccount":%q,"newOrder":%q,"revokeCert":%q}`,
			s.srv.URL+"/nonce", s.srv.URL+"/new-acct", s.srv.URL+"/new-order", s.srv.URL+"/revoke")
	case p == "/nonce":
		s.nonceHits.Add(1)
	case p == "/order/1":
		w.Header().Set("Retry-After", "3")
		order("processing", "")
	case p == "/order/2":
		order("invalid", `,"error":{"type":"urn:ietf:params:acme:error:caa","detail":"CAA forbids","subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"no","identifier":{"type":"dns","value":"a.test"}}]}`)
	case p == "/authz/1":
		w.Header().Set("Retry-After", time.Now().Add(10*time.Second).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"pending","identifier":{"type":"dns","value":"a.test"},"wildcard":true,`+
			`"challenges":[{"type":"dns-01","url":%q,"status":"pending","token":"tok"}]}`, s.srv.URL+"/chall/1")
	case p == "/finalize/1":
		order("invalid", `,"error":{"type":"urn:ietf:params:acme:error:badCSR","detail":"key too small","status":400}`)
	case p == "/gone":
		w.WriteHeader(http.StatusNotFound)
	case p == "/broken":
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down","status":503}`)
	case p == "/hang":
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
	case s.chains[p] != nil:
		all := []string{"/cert/1", "/cert/1/alt/1", "/cert/1/alt/2"}
		for _, other := range all {
			if other == p {
				continue
			}
			if other != "/cert/1/alt/1" { // that one stays a relative reference
				other = s.srv.URL + other
			}
			w.Header().Add("Link", fmt.Sprintf(`<%s>;rel="alternate"`, other))
		}
		w.Header().Add("Link", fmt.Sprintf(`<%s/dir>; title="a, b"; rel=index`, s.srv.URL))
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		_, _ = w.Write(s.chains[p])
	default:
		http.NotFound(w, r)
	}
}

// testChain is leaf ← "Int <x>" ← "Root <x>" (the root not included).
func testChain(t *testing.T, x string) []byte {
	t.Helper()
	rootKey, intKey, leafKey := p256(t), p256(t), p256(t)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Root " + x}}
	inter := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Int " + x},
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "a.test"}, DNSNames: []string{"a.test"},
		NotAfter: time.Now().Add(time.Hour)}
	interDER, err := x509.CreateCertificate(rand.Reader, inter, root, intKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, inter, leafKey.Public(), intKey)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})...)
}

func TestStubRetryAfterAndProblems(t *testing.T) {
	t.Parallel()
	s := startStubCA(t)
	c := newClient(t, s.rootsFile)
	ctx := context.Background()
	acct := s.account(t)

	o, err := c.GetOrder(ctx, acct, s.srv.URL+"/order/1")
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	want := issuance.Order{
		URL: s.srv.URL + "/order/1", Status: "processing", Expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Authorizations: []string{s.srv.URL + "/authz/1"}, FinalizeURL: s.srv.URL + "/finalize/1", RetryAfter: 3 * time.Second,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("order\n got %+v\nwant %+v", o, want)
	}

	a, err := c.GetAuthorization(ctx, acct, s.srv.URL+"/authz/1")
	if err != nil {
		t.Fatalf("GetAuthorization: %v", err)
	}
	if a.RetryAfter < 8*time.Second || a.RetryAfter > 10*time.Second {
		t.Errorf("authorization RetryAfter %v from an HTTP date 10s ahead", a.RetryAfter)
	}
	a.RetryAfter = 0
	wantA := issuance.Authorization{URL: s.srv.URL + "/authz/1", Status: "pending", Identifier: "a.test", Wildcard: true,
		Challenges: []issuance.Challenge{{Type: "dns-01", URL: s.srv.URL + "/chall/1", Token: "tok", Status: "pending"}}}
	if !reflect.DeepEqual(a, wantA) {
		t.Errorf("authorization\n got %+v\nwant %+v", a, wantA)
	}

	o, err = c.GetOrder(ctx, acct, s.srv.URL+"/order/2")
	if err != nil {
		t.Fatalf("GetOrder invalid: %v", err)
	}
	if o.Status != "invalid" || o.Error == nil || o.Error.Type != problemNS+"caa" || o.Error.Detail != "CAA forbids; a.test: urn:ietf:params:acme:error:caa: no" {
		t.Errorf("invalid order %+v (error %+v)", o, o.Error)
	}

	o, err = c.Finalize(ctx, acct, s.srv.URL+"/finalize/1", []byte{0x30, 0})
	if err != nil {
		t.Fatalf("Finalize to an invalid order: %v", err)
	}
	if o.Status != "invalid" || o.Error == nil || o.Error.Type != problemNS+"badCSR" || o.Error.Status != 400 || o.FinalizeURL == "" {
		t.Errorf("finalized invalid order %+v (error %+v)", o, o.Error)
	}

	_, err = c.GetOrder(ctx, acct, s.srv.URL+"/gone")
	if prob := asProblem(t, err); prob.Status != 404 || prob.Type != "about:blank" {
		t.Errorf("bare 404: %+v", prob)
	}
	_, err = c.GetOrder(ctx, acct, s.srv.URL+"/broken")
	requireTransient(t, err)

	// One directory fetch, one nonce for the one Core, then one POST a call.
	if n := s.dirGets.Load(); n != 1 {
		t.Errorf("directory fetched %d times, want 1", n)
	}
	if n := s.nonceHits.Load(); n != 1 {
		t.Errorf("newNonce asked %d times, want 1", n)
	}
	posts := s.posts.Load()
	if _, err := c.GetOrder(ctx, acct, s.srv.URL+"/order/1"); err != nil {
		t.Fatal(err)
	}
	if n := s.posts.Load() - posts; n != 1 || s.nonceHits.Load() != 1 || s.dirGets.Load() != 1 {
		t.Errorf("a warm GetOrder made %d POSTs, %d HEADs, %d directory GETs; want 1, 1, 1 in all", n, s.nonceHits.Load(), s.dirGets.Load())
	}

	// Another key for the same account URL gets a Core of its own (a
	// nonce), still without a directory fetch.
	other := acct
	other.Key = p256(t)
	if _, err := c.GetOrder(ctx, other, s.srv.URL+"/order/1"); err != nil {
		t.Fatal(err)
	}
	if s.nonceHits.Load() != 2 || s.dirGets.Load() != 1 {
		t.Errorf("new key: %d nonces, %d directory GETs; want 2, 1", s.nonceHits.Load(), s.dirGets.Load())
	}

	// Concurrent calls borrow more Cores; still one directory fetch.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.GetOrder(ctx, acct, s.srv.URL+"/order/1"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if s.dirGets.Load() != 1 {
		t.Errorf("directory fetched %d times after concurrent calls", s.dirGets.Load())
	}
}

func TestStubDownloadAlternates(t *testing.T) {
	t.Parallel()
	s := startStubCA(t)
	c := newClient(t, s.rootsFile)
	ctx := context.Background()
	acct := s.account(t)
	def, alt1, alt2 := s.srv.URL+"/cert/1", s.srv.URL+"/cert/1/alt/1", s.srv.URL+"/cert/1/alt/2"

	for _, tc := range []struct {
		preferred string
		chain     string
		alts      []string
		posts     int32
	}{
		{"", def, []string{alt1, alt2}, 1},
		{"Root A", def, []string{alt1, alt2}, 1},
		{"Root C", alt2, []string{def, alt1}, 3},
		{"Root B", alt1, []string{def, alt2}, 2},
		{"Root Z", def, []string{alt1, alt2}, 3},
	} {
		before := s.posts.Load()
		got, err := c.Download(ctx, acct, def, tc.preferred)
		if err != nil {
			t.Fatalf("Download(%q): %v", tc.preferred, err)
		}
		path := strings.TrimPrefix(tc.chain, s.srv.URL)
		if !bytes.Equal(got.ChainPEM, s.chains[path]) {
			t.Errorf("Download(%q): not the chain at %s", tc.preferred, path)
		}
		if !reflect.DeepEqual(got.Alternates, tc.alts) {
			t.Errorf("Download(%q): Alternates %q, want %q", tc.preferred, got.Alternates, tc.alts)
		}
		if n := s.posts.Load() - before; n != tc.posts {
			t.Errorf("Download(%q): %d POSTs, want %d", tc.preferred, n, tc.posts)
		}
	}
}

func TestStubHonoursContext(t *testing.T) {
	t.Parallel()
	s := startStubCA(t)
	c := newClient(t, s.rootsFile)
	acct := s.account(t)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.GetOrder(ctx, acct, s.srv.URL+"/hang")
	requireTransient(t, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v is not context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("GetOrder took %v after a 200ms deadline", d)
	}

	// The Core that the timed-out call used serves the next call.
	if _, err := c.GetOrder(context.Background(), acct, s.srv.URL+"/order/1"); err != nil {
		t.Errorf("GetOrder after a timeout: %v", err)
	}

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = c.GetOrder(canceled, acct, s.srv.URL+"/order/1")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("GetOrder with a canceled context: %v, want context.Canceled", err)
	}
}

// KeyAuthorization computes the RFC 7638 thumbprint itself (it makes no
// request); lego's Core must agree for every account key type.
func TestKeyAuthorizationMatchesLego(t *testing.T) {
	t.Parallel()
	s := startStubCA(t)
	c := newClient(t, s.rootsFile)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-256": p256(t), "P-384": p384, "RSA-2048": rsaKey(t, 2048)} {
		core, err := api.New(&http.Client{Transport: s.srv.Client().Transport}, "test", s.srv.URL+"/dir", "", key)
		if err != nil {
			t.Fatal(err)
		}
		want, err := core.GetKeyAuthorization("token-1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.KeyAuthorization(issuance.Account{Key: key}, "token-1")
		if err != nil || got != want {
			t.Errorf("%s: KeyAuthorization = %q, %v; lego says %q", name, got, err, want)
		}
	}
}

// ---------------------------------------------------------------------

// BenchmarkIssueOne is the full single-certificate flow against Pebble
// (PEBBLE_VA_NOSLEEP=1, HTTP-01 served in-process, ECDSA P-256, polling
// every 5 ms), a new name each time so that no authorization is reused.
// It reports the median; run with -benchtime 10x.
func BenchmarkIssueOne(b *testing.B) {
	r := startRig(b)
	// Warm up: the first Core, TLS connections, the responder.
	r.issue(b, flow{names: []string{"warm.certfleet.test"}, poll: 5 * time.Millisecond})
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		got := r.issue(b, flow{names: []string{fmt.Sprintf("bench-%d-%d.certfleet.test", b.N, i)}, poll: 5 * time.Millisecond})
		times = append(times, time.Since(start))
		if got.failed != nil {
			b.Fatalf("authorization invalid: %+v", got.failed)
		}
	}
	b.StopTimer()
	slices.Sort(times)
	median := times[len(times)/2]
	if len(times)%2 == 0 {
		median = (times[len(times)/2-1] + times[len(times)/2]) / 2
	}
	b.ReportMetric(float64(median.Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(times[0].Microseconds())/1000, "ms-min")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "ms-max")
}
