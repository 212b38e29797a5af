package issuance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/worker"
)

// ---------------------------------------------------------------------
// The rig: real store, sealer and local queue (testenv), real Pebble that
// resolves every name to 127.0.0.1 (pebbletest.StartDNS) and validates
// HTTP-01 against ChallengeGroup on a loopback port, the real acme
// adapter, and worker.Run over the queue with the steps registered.

const userID = 7

type rig struct {
	parts  *testenv.Parts
	pebble *pebbletest.Pebble
	svc    *issuance.Service
	reg    *worker.Registry
	ca     *countingCA
	sent   *recordingSender
	certs  *fakeCerts
	acct   issuance.Account
	// wrongKA makes the challenge responder serve a wrong key
	// authorization.
	wrongKA atomic.Bool
}

func startRig(tb testing.TB) *rig {
	tb.Helper()
	r := &rig{parts: testenv.New(tb), certs: &fakeCerts{specs: map[int64]issuance.CertSpec{}, issued: map[int64]issuance.Issued{}}}
	r.sent = &recordingSender{Sender: r.parts.Queue}

	// The challenge responder: ChallengeGroup over the service, which is
	// made once Pebble runs.
	var svcPtr atomic.Pointer[issuance.Service]
	src := kaFunc(func(ctx context.Context, token string) (string, error) {
		svc := svcPtr.Load()
		if svc == nil {
			return "", apperr.New(apperr.NotFound, "not yet")
		}
		ka, err := svc.KeyAuthorization(ctx, token)
		if err == nil && r.wrongKA.Load() {
			ka = token + ".not-the-thumbprint"
		}
		return ka, err
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: httpapi.NewRouter(httpapi.ChallengeGroup(src)), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close() })

	r.pebble = pebbletest.Start(tb, pebbletest.Options{HTTPPort: l.Addr().(*net.TCPAddr).Port, DNSServer: pebbletest.StartDNS(tb)})
	client, err := acme.New(acme.Config{RootsPEMFile: r.pebble.RootsPEMFile, Timeout: 20 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	r.ca = &countingCA{ACME: client}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	acctURL, err := client.Register(context.Background(), acmeacct.Registration{DirectoryURL: r.pebble.DirectoryURL, Key: key})
	if err != nil {
		tb.Fatalf("Register: %v", err)
	}
	acct, err := issuance.AccountFrom(r.pebble.DirectoryURL, acctURL, key)
	if err != nil {
		tb.Fatal(err)
	}
	accounts := fakeAccounts{1: acct}
	r.acct = acct

	r.svc = issuance.New(r.parts.Store, r.parts.Sealer, r.sent, r.ca, accounts, r.certs,
		issuance.Config{MaxAttempts: 5, Log: r.parts.Log})
	svcPtr.Store(r.svc)
	r.reg = &worker.Registry{}
	for _, k := range issuance.Kinds {
		r.reg.Register(k, r.svc.Step)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = worker.Run(ctx, r.parts.Queue, r.reg, worker.Options{Concurrency: 8, Logger: r.parts.Log,
			Backoff: func(int) time.Duration { return 20 * time.Millisecond }})
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return r
}

type kaFunc func(ctx context.Context, token string) (string, error)

func (f kaFunc) KeyAuthorization(ctx context.Context, token string) (string, error) {
	return f(ctx, token)
}

type fakeAccounts map[int64]issuance.Account

func (f fakeAccounts) Account(_ context.Context, _, acctID int64) (issuance.Account, error) {
	a, ok := f[acctID]
	if !ok {
		return issuance.Account{}, apperr.New(apperr.NotFound, "ACME account %d not found", acctID)
	}
	return a, nil
}

type fakeCerts struct {
	mu     sync.Mutex
	specs  map[int64]issuance.CertSpec
	issued map[int64]issuance.Issued
}

func (f *fakeCerts) add(id int64, spec issuance.CertSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs[id] = spec
}

func (f *fakeCerts) get(id int64) issuance.Issued {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued[id]
}

func (f *fakeCerts) Spec(_ context.Context, _, certID int64) (issuance.CertSpec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.specs[certID]
	if !ok {
		return s, apperr.New(apperr.NotFound, "certificate %d not found", certID)
	}
	s.IssueID = f.issued[certID].IssueID
	return s, nil
}

func (f *fakeCerts) RecordRevoked(_ context.Context, _, certID int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.issued, certID)
	return nil
}

func (f *fakeCerts) PlanRenewal(_ context.Context, _, certID int64, renewAt, checkAt time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	is := f.issued[certID]
	is.RenewAt, is.CheckAt = renewAt, checkAt
	f.issued[certID] = is
	return nil
}

func (f *fakeCerts) RecordIssued(_ context.Context, _, certID int64, is issuance.Issued) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issued[certID] = is
	return nil
}

// countingCA counts the calls of each method.
type countingCA struct {
	issuance.ACME
	newOrders, getOrders, getAuthzs, accepts, finalizes, downloads atomic.Int32
	// holdDownloads, while set, makes Download wait for the channel to
	// close and then fail.
	holdDownloads atomic.Pointer[chan struct{}]
}

func (c *countingCA) NewOrder(ctx context.Context, a issuance.Account, req issuance.OrderRequest) (issuance.Order, error) {
	c.newOrders.Add(1)
	return c.ACME.NewOrder(ctx, a, req)
}
func (c *countingCA) GetOrder(ctx context.Context, a issuance.Account, u string) (issuance.Order, error) {
	c.getOrders.Add(1)
	return c.ACME.GetOrder(ctx, a, u)
}
func (c *countingCA) GetAuthorization(ctx context.Context, a issuance.Account, u string) (issuance.Authorization, error) {
	c.getAuthzs.Add(1)
	return c.ACME.GetAuthorization(ctx, a, u)
}
func (c *countingCA) AcceptChallenge(ctx context.Context, a issuance.Account, u string) (issuance.Challenge, error) {
	c.accepts.Add(1)
	return c.ACME.AcceptChallenge(ctx, a, u)
}
func (c *countingCA) Finalize(ctx context.Context, a issuance.Account, u string, csr []byte) (issuance.Order, error) {
	c.finalizes.Add(1)
	return c.ACME.Finalize(ctx, a, u, csr)
}
func (c *countingCA) Download(ctx context.Context, a issuance.Account, u, pref string) (issuance.Certificate, error) {
	c.downloads.Add(1)
	if hold := c.holdDownloads.Load(); hold != nil {
		select { // an outage while the test needs the issue at download
		case <-*hold:
		case <-ctx.Done():
		}
		return issuance.Certificate{}, errors.New("the CA is unreachable")
	}
	return c.ACME.Download(ctx, a, u, pref)
}

func (c *countingCA) calls() int32 {
	return c.newOrders.Load() + c.getOrders.Load() + c.getAuthzs.Load() + c.accepts.Load() + c.finalizes.Load() + c.downloads.Load()
}

// recordingSender keeps every message sent.
type recordingSender struct {
	queue.Sender
	mu   sync.Mutex
	msgs []queue.Message
}

func (s *recordingSender) Send(ctx context.Context, m queue.Message, delay time.Duration) (string, error) {
	id, err := s.Sender.Send(ctx, m, delay)
	if err == nil {
		s.mu.Lock()
		m.ID = id
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	}
	return id, err
}

func (s *recordingSender) all() []queue.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// wait polls the issue until it is done (issued or failed, cleaned up).
func (r *rig) wait(tb testing.TB, certID, issueID int64) issuance.Issue {
	tb.Helper()
	return r.waitFor(tb, certID, issueID, func(is issuance.Issue) bool { return is.Step == issuance.StepDone })
}

// waitFor polls the issue until done says so.
func (r *rig) waitFor(tb testing.TB, certID, issueID int64, done func(issuance.Issue) bool) issuance.Issue {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		is, err := r.svc.Get(context.Background(), userID, certID, issueID)
		if err != nil {
			tb.Fatalf("Get: %v", err)
		}
		if done(is) {
			return is
		}
		if time.Now().After(deadline) {
			tb.Fatalf("issue %d still pending at step %s", issueID, is.Step)
		}
		time.Sleep(time.Millisecond)
	}
}

func parseChain(tb testing.TB, chainPEM string) []*x509.Certificate {
	tb.Helper()
	var chain []*x509.Certificate
	for rest := []byte(chainPEM); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) < 2 {
		tb.Fatalf("chain of %d certificates", len(chain))
	}
	return chain
}

// ---------------------------------------------------------------------

func TestIssue(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	cases := []struct {
		certID int64
		spec   issuance.CertSpec
		check  func(crypto.PublicKey) bool
	}{
		{1, issuance.CertSpec{Names: []string{"one.certfleet.test"}, KeyAlgorithm: issuance.KeyECDSA, KeySize: 256, AcctID: 1, ValidationMethod: "http-01"},
			func(k crypto.PublicKey) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve == elliptic.P256() }},
		{2, issuance.CertSpec{Names: []string{"two.certfleet.test", "www.two.certfleet.test"}, KeyAlgorithm: issuance.KeyRSA, KeySize: 2048, AcctID: 1, ValidationMethod: "http-01"},
			func(k crypto.PublicKey) bool { p, ok := k.(*rsa.PublicKey); return ok && p.N.BitLen() == 2048 }},
	}
	for _, c := range cases {
		r.certs.add(c.certID, c.spec)
		is, err := r.svc.Start(ctx, userID, c.certID)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		again, err := r.svc.Start(ctx, userID, c.certID)
		if err != nil || again.ID != is.ID {
			t.Fatalf("repeated Start = %d, %v; want the active issue %d", again.ID, err, is.ID)
		}
		got := r.wait(t, c.certID, is.ID)
		if got.Status != issuance.StatusIssued {
			t.Fatalf("issue %d: %s (%s)", is.ID, got.Status, got.Error)
		}
		chain := parseChain(t, got.ChainPEM)
		leaf := chain[0]
		if !reflect.DeepEqual(sortedCopy(leaf.DNSNames), sortedCopy(c.spec.Names)) {
			t.Errorf("leaf names %q, want %q", leaf.DNSNames, c.spec.Names)
		}
		pool := x509.NewCertPool()
		for _, ic := range chain[1:] {
			pool.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.pebble.IssuerRoots(t), Intermediates: pool, DNSName: c.spec.Names[len(c.spec.Names)-1]}); err != nil {
			t.Errorf("chain does not verify to Pebble's root: %v", err)
		}
		sealed, encCtx, err := r.svc.SealedKey(ctx, userID, c.certID, is.ID)
		if err != nil {
			t.Fatal(err)
		}
		der, err := r.parts.Sealer.Open(ctx, sealed, encCtx)
		if err != nil {
			t.Fatalf("open key: %v", err)
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatal(err)
		}
		pub := k.(crypto.Signer).Public()
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) || !c.check(pub) {
			t.Errorf("stored key %T does not match the leaf or the spec", pub)
		}
		// The renewal is planned inside the CA's ARI window.
		rec := r.certs.get(c.certID)
		ri, err := r.ca.ACME.RenewalInfo(ctx, r.acct, leaf.Raw)
		if err != nil {
			t.Fatalf("RenewalInfo: %v", err)
		}
		if !rec.NotAfter.Equal(leaf.NotAfter) || rec.IssueID != is.ID ||
			rec.RenewAt.Before(ri.Start.Truncate(time.Second)) || !rec.RenewAt.Before(ri.End) {
			t.Errorf("recorded %+v; leaf %s..%s, ARI window %s..%s", rec, leaf.NotBefore, leaf.NotAfter, ri.Start, ri.End)
		}
		if !got.RenewAt.Equal(rec.RenewAt) || !got.NotAfter.Equal(leaf.NotAfter) {
			t.Errorf("issue times %s / %s", got.RenewAt, got.NotAfter)
		}
	}
	if n := r.ca.newOrders.Load(); n != 2 {
		t.Errorf("%d orders for 2 issues", n)
	}

	// Replaying every message ever sent changes nothing.
	before1, _ := r.svc.Get(ctx, userID, 1, 1)
	before2, _ := r.svc.Get(ctx, userID, 2, 2)
	calls := r.ca.calls()
	msgs := r.sent.all()
	for _, m := range msgs {
		if err := r.reg.Dispatch(ctx, queue.Delivery{Message: m, Attempt: 1}); err != nil {
			t.Errorf("replay %s: %v", m.Kind, err)
		}
		if _, err := r.parts.Queue.Send(ctx, m, 0); err != nil { // and through the worker
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	after1, _ := r.svc.Get(ctx, userID, 1, 1)
	after2, _ := r.svc.Get(ctx, userID, 2, 2)
	if !reflect.DeepEqual(before1, after1) || !reflect.DeepEqual(before2, after2) {
		t.Errorf("replay changed the issues")
	}
	if c := r.ca.calls(); c != calls {
		t.Errorf("replaying %d messages made %d CA calls", len(msgs), c-calls)
	}
	if len(r.sent.all()) != len(msgs) {
		t.Errorf("replay queued %d new messages", len(r.sent.all())-len(msgs))
	}
	t.Logf("%d step messages for 2 issues; CA calls: %d orders, %d order reads, %d authz reads, %d accepts, %d finalizes, %d downloads",
		len(msgs), r.ca.newOrders.Load(), r.ca.getOrders.Load(), r.ca.getAuthzs.Load(), r.ca.accepts.Load(), r.ca.finalizes.Load(), r.ca.downloads.Load())

	// The history lists the issue; a new Start is a new issue.
	hist, _, err := r.svc.History(ctx, userID, 1, 0, "")
	if err != nil || len(hist) != 1 || hist[0].ID != 1 {
		t.Fatalf("History = %+v, %v", hist, err)
	}
	next, err := r.svc.Start(ctx, userID, 1)
	if err != nil || next.ID == 1 {
		t.Fatalf("Start after issued = %+v, %v", next, err)
	}
	if got := r.wait(t, 1, next.ID); got.Status != issuance.StatusIssued {
		t.Fatalf("second issue: %s %s", got.Status, got.Error)
	}
	if hist, _, _ = r.svc.History(ctx, userID, 1, 0, ""); len(hist) != 2 || hist[0].ID != next.ID {
		t.Errorf("History after a second issue: %d issues", len(hist))
	}
	if hist[0].Renews != 1 {
		t.Errorf("the second issue renews %d, want issue 1", hist[0].Renews)
	}
	if want, _ := issuance.ARICertID(parseChain(t, hist[1].ChainPEM)[0]); hist[0].Replaces != want || want == "" {
		t.Errorf("the renewal's order replaces %q, want %q", hist[0].Replaces, want)
	}

	// One event per issued certificate, the second issue a renewal.
	log, err := events.New(r.parts.Store).After(ctx, userID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range log {
		got = append(got, fmt.Sprintf("%s %d/%d", ev.Type, ev.CertID, ev.IssueID))
	}
	want := []string{events.Issued + " 1/1", events.Issued + " 2/2", fmt.Sprintf("%s 1/%d", events.Renewed, next.ID)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event log %q, want %q", got, want)
	}
}

func TestInvalidChallenge(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	r.wrongKA.Store(true)
	r.certs.add(1, issuance.CertSpec{Names: []string{"wrong.certfleet.test"}, KeyAlgorithm: issuance.KeyECDSA, KeySize: 256, AcctID: 1})
	is, err := r.svc.Start(ctx, userID, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := r.wait(t, 1, is.ID)
	if got.Status != issuance.StatusFailed || !strings.Contains(got.Error, "unauthorized") || !strings.Contains(got.Error, "not-the-thumbprint") {
		t.Fatalf("issue %s, error %q; want failed with Pebble's detail", got.Status, got.Error)
	}
	t.Logf("failed: %s", got.Error)
	calls, sent := r.ca.calls(), len(r.sent.all())
	time.Sleep(300 * time.Millisecond)
	if c, s := r.ca.calls(), len(r.sent.all()); c != calls || s != sent {
		t.Errorf("after failing: %d more CA calls, %d more messages", c-calls, s-sent)
	}
	if sent > 20 {
		t.Errorf("%d messages for one failed issue", sent)
	}
	if r.ca.finalizes.Load() != 0 {
		t.Errorf("finalized a failed order")
	}
	// Its HTTP-01 token is gone (Pebble's detail quotes it).
	if _, rest, ok := strings.Cut(got.Error, `did not match this challenge "`); ok {
		token, _, _ := strings.Cut(rest, ".")
		if _, err := r.svc.KeyAuthorization(ctx, token); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("token %q still served after the failure: %v", token, err)
		}
	} else {
		t.Errorf("no token in %q", got.Error)
	}
	// The certificate can be issued again.
	r.wrongKA.Store(false)
	next, err := r.svc.Start(ctx, userID, 1)
	if err != nil || next.ID == is.ID {
		t.Fatalf("Start after failure = %+v, %v", next, err)
	}
	if got := r.wait(t, 1, next.ID); got.Status != issuance.StatusIssued {
		t.Errorf("issue after a failure: %s %s", got.Status, got.Error)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	if _, err := r.svc.Start(ctx, userID, 99); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("unknown certificate: %v", err)
	}
	r.certs.add(3, issuance.CertSpec{Names: []string{"dns.certfleet.test"}, AcctID: 1, ValidationMethod: "dns-01-provider"})
	// A method this worker has no solver for fails the issue, saying so.
	dns, err := r.svc.Start(ctx, userID, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.wait(t, 3, dns.ID); got.Status != issuance.StatusFailed || !strings.Contains(got.Error, "no dns-01-provider solver") {
		t.Errorf("dns-01 without a solver: %s %q", got.Status, got.Error)
	}
	r.certs.add(4, issuance.CertSpec{Names: []string{"noacct.certfleet.test"}, AcctID: 42})
	is, err := r.svc.Start(ctx, userID, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.wait(t, 4, is.ID); got.Status != issuance.StatusFailed || !strings.Contains(got.Error, "not found") {
		t.Errorf("missing account: %s %q", got.Status, got.Error)
	}
	if _, err := r.svc.KeyAuthorization(ctx, "nope"); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("unknown token: %v", err)
	}
	if _, err := r.svc.Get(ctx, userID, 4, 999); apperr.CodeOf(err) != apperr.NotFound {
		t.Errorf("unknown issue: %v", err)
	}
}

// BenchmarkIssueOne measures Start → certificate downloadable (the issue
// issued with its chain stored) for one certificate, a new name each
// time, through the worker loop. It reports the median; run with
// -benchtime 10x.
func BenchmarkIssueOne(b *testing.B) {
	r := startRig(b)
	ctx := context.Background()
	issue := func(id int64, name string) time.Duration {
		r.certs.add(id, issuance.CertSpec{Names: []string{name}, KeyAlgorithm: issuance.KeyECDSA, KeySize: 256, AcctID: 1})
		start := time.Now()
		is, err := r.svc.Start(ctx, userID, id)
		if err != nil {
			b.Fatal(err)
		}
		downloadable := func(is issuance.Issue) bool { return is.Status != issuance.StatusPending }
		if got := r.waitFor(b, id, is.ID, downloadable); got.Status != issuance.StatusIssued {
			b.Fatalf("%s: %s", got.Status, got.Error)
		}
		return time.Since(start)
	}
	issue(1000, "warm.certfleet.test")
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		times = append(times, issue(int64(i+1), fmt.Sprintf("bench-%d-%d.certfleet.test", b.N, i)))
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

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// BenchmarkIssueHundred starts 100 issues at once and reports the wall
// time until all are downloadable (the worker loop runs 8 steps at once).
func BenchmarkIssueHundred(b *testing.B) {
	r := startRig(b)
	ctx := context.Background()
	for n := 0; n < b.N; n++ {
		ids := make(map[int64]int64, 100)
		for i := range 100 {
			id := int64(100000*(n+1) + i)
			r.certs.add(id, issuance.CertSpec{Names: []string{fmt.Sprintf("h%d-%d.certfleet.test", n, i)},
				KeyAlgorithm: issuance.KeyECDSA, KeySize: 256, AcctID: 1})
		}
		start := time.Now()
		for i := range 100 {
			id := int64(100000*(n+1) + i)
			is, err := r.svc.Start(ctx, userID, id)
			if err != nil {
				b.Fatal(err)
			}
			ids[id] = is.ID
		}
		for certID, issueID := range ids {
			got := r.waitFor(b, certID, issueID, func(is issuance.Issue) bool { return is.Status != issuance.StatusPending })
			if got.Status != issuance.StatusIssued {
				b.Fatalf("%s: %s", got.Status, got.Error)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-for-100")
	}
}
