package acme_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/issuance"
)

// ---------------------------------------------------------------------
// ACME Renewal Information (RFC 9773) against Pebble.

// issueARI issues a certificate for names whose ARI certificate id Pebble
// v2.10.1 can find again for "replaces". Pebble keys issued orders by the
// hex of serial.Bytes(), but looks a "replaces" id up by the hex of the
// DER serial octets, which have a leading zero when the first octet's
// high bit is set (about 1 in 256 of its serials); such a certificate is
// issued again.
func (r *rig) issueARI(t *testing.T, names []string) *x509.Certificate {
	t.Helper()
	for range 5 {
		got := r.issue(t, flow{names: names})
		if got.failed != nil {
			t.Fatalf("authorization invalid: %+v", got.failed)
		}
		leaf := got.chain[0]
		if b := leaf.SerialNumber.Bytes(); len(b) > 0 && b[0]&0x80 == 0 {
			return leaf
		}
		t.Logf("serial %x has a DER leading zero Pebble cannot look up; issuing again", leaf.SerialNumber)
	}
	t.Fatal("five certificates in a row with a serial Pebble cannot look up")
	return nil
}

// leafWithAKI is a certificate with that Authority Key Identifier and
// serial, signed by a throwaway key.
func leafWithAKI(t *testing.T, aki []byte, serial *big.Int) *x509.Certificate {
	t.Helper()
	key := p256(t)
	parent := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ARI test issuer"}, SubjectKeyId: aki}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "ari.test"},
		DNSNames: []string{"ari.test"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, parent, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.AuthorityKeyId, aki) {
		t.Fatalf("test certificate AKI %x, want %x", c.AuthorityKeyId, aki)
	}
	return c
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func TestRenewalInfoPebble(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	leaf := r.issueARI(t, []string{"ari.certfleet.test"})
	ctx := context.Background()

	ri, err := r.client.RenewalInfo(ctx, r.acct, leaf.Raw)
	if err != nil {
		t.Fatalf("RenewalInfo: %v", err)
	}
	t.Logf("certificate %s to %s; window %s to %s; retry after %s", leaf.NotBefore, leaf.NotAfter, ri.Start, ri.End, ri.RetryAfter)
	if !ri.Start.Before(ri.End) {
		t.Errorf("window %s to %s is empty", ri.Start, ri.End)
	}
	if ri.Start.Before(leaf.NotBefore) || ri.End.After(leaf.NotAfter) {
		t.Errorf("window %s to %s is not within the validity %s to %s", ri.Start, ri.End, leaf.NotBefore, leaf.NotAfter)
	}
	if ri.ExplanationURL != "" {
		t.Errorf("ExplanationURL %q, want none", ri.ExplanationURL)
	}
	if ri.RetryAfter != 6*time.Hour { // Pebble v2.10.1 always sends 21600
		t.Errorf("RetryAfter %s, want 6h", ri.RetryAfter)
	}

	// Another account may ask too: ARI is not bound to the account.
	other := r.register(t)
	if ri2, err := r.client.RenewalInfo(ctx, other, leaf.Raw); err != nil || !ri2.Start.Equal(ri.Start) || !ri2.End.Equal(ri.End) {
		t.Errorf("RenewalInfo through another account: %+v, %v; want %+v", ri2, err, ri)
	}
}

func TestRenewalInfoSetWindow(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	leaf := r.issueARI(t, []string{"ari-window.certfleet.test"})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)

	start, end := now.Add(time.Hour), now.Add(3*time.Hour)
	r.pebble.SetRenewalWindow(t, certPEM(leaf), start, end, "https://ca.certfleet.test/why")
	ri, err := r.client.RenewalInfo(ctx, r.acct, leaf.Raw)
	if err != nil {
		t.Fatalf("RenewalInfo: %v", err)
	}
	want := issuance.RenewalInfo{Start: start, End: end, ExplanationURL: "https://ca.certfleet.test/why", RetryAfter: 6 * time.Hour}
	if ri != want {
		t.Errorf("RenewalInfo = %+v, want %+v", ri, want)
	}

	// A window already past (a CA asking for renewal now) is returned as is.
	start, end = now.Add(-2*time.Hour), now.Add(-time.Hour)
	r.pebble.SetRenewalWindow(t, certPEM(leaf), start, end, "")
	if ri, err = r.client.RenewalInfo(ctx, r.acct, leaf.Raw); err != nil || !ri.Start.Equal(start) || !ri.End.Equal(end) {
		t.Errorf("past window: %+v, %v; want %s to %s", ri, err, start, end)
	}

	// RFC 9773 §4.2: an answer that is no valid RenewalInfo is treated as
	// no answer: a transient error, never a window.
	for name, body := range map[string]string{
		"end before start": fmt.Sprintf(`{"suggestedWindow":{"start":%q,"end":%q}}`, now.Add(time.Hour).Format(time.RFC3339), now.Format(time.RFC3339)),
		"end equals start": fmt.Sprintf(`{"suggestedWindow":{"start":%q,"end":%q}}`, now.Format(time.RFC3339), now.Format(time.RFC3339)),
		"no window":        `{}`,
		"no JSON":          `this is not JSON`,
	} {
		r.pebble.SetRenewalInfo(t, certPEM(leaf), body)
		_, err := r.client.RenewalInfo(ctx, r.acct, leaf.Raw)
		t.Logf("%s: %v", name, err)
		requireTransient(t, err)
	}
}

func TestRenewalInfoRefused(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	leaf := r.issueARI(t, []string{"ari-refused.certfleet.test"})
	ctx := context.Background()

	// A certificate from Pebble's intermediate (same AKI) that Pebble never
	// issued: 404.
	foreign := leafWithAKI(t, leaf.AuthorityKeyId, big.NewInt(0x1234567))
	_, err := r.client.RenewalInfo(ctx, r.acct, foreign.Raw)
	if prob := asProblem(t, err); prob.Status != http.StatusNotFound {
		t.Errorf("unknown certificate: %+v, want a 404 problem", prob)
	}

	// Refused before the CA: no certificate, not DER, no AKI.
	key := p256(t)
	noAKI, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(9),
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1)}, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := x509.ParseCertificate(noAKI); len(c.AuthorityKeyId) != 0 {
		t.Fatalf("test certificate has an AKI %x", c.AuthorityKeyId)
	}
	for name, der := range map[string][]byte{"empty": nil, "not DER": []byte("nope"), "no AKI": noAKI} {
		_, err := r.client.RenewalInfo(ctx, r.acct, der)
		if prob := asProblem(t, err); prob.Type != malformed || prob.Status != 0 {
			t.Errorf("%s: %+v, want malformed with Status 0", name, prob)
		}
	}
}

// A replacing order (replaces = ARICertID of the old leaf) is accepted;
// once it is finalized, Pebble marks the old certificate replaced, and a
// second order replacing it is refused with alreadyReplaced, which the
// port returns as such (lego alone would retry without "replaces").
func TestARIAlreadyReplaced(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	names := []string{"ari-replaced.certfleet.test"}
	old := r.issueARI(t, names)
	certID, err := issuance.ARICertID(old)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	o, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: names, Replaces: certID})
	if err != nil {
		t.Fatalf("NewOrder replacing %s: %v", certID, err)
	}
	r.complete(t, o, names)

	// Pebble marks the replaced certificate right after it issues the
	// new one, in the background: the order may read valid a moment
	// before.
	var prob *acmeacct.Problem
	deadline := time.Now().Add(5 * time.Second)
	for {
		o2, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: names, Replaces: certID})
		if errors.As(err, &prob) {
			break
		}
		if err != nil {
			t.Fatalf("second replacing order: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("second replacing order accepted: %+v (Pebble did not enforce alreadyReplaced)", o2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("problem: %d %v", prob.Status, prob)
	if prob.Type != issuance.ProblemAlreadyReplaced || prob.Status != http.StatusConflict {
		t.Fatalf("second replacing order: %+v, want alreadyReplaced 409", prob)
	}

	// The step machine's way on: order again without replaces, on the
	// same (pooled) Core, whose nonce the refusal left usable.
	o3, err := r.client.NewOrder(ctx, r.acct, issuance.OrderRequest{Names: names})
	if err != nil {
		t.Fatalf("NewOrder without replaces after alreadyReplaced: %v", err)
	}
	if o3.Status != "pending" && o3.Status != "ready" {
		t.Errorf("order without replaces: %+v", o3)
	}
}

// complete takes a new order through HTTP-01, finalization and download.
func (r *rig) complete(t *testing.T, o issuance.Order, names []string) issuance.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, acct := r.client, r.acct
	const poll = 10 * time.Millisecond
	for _, az := range o.Authorizations {
		a, err := c.GetAuthorization(ctx, acct, az)
		if err != nil {
			t.Fatalf("GetAuthorization: %v", err)
		}
		if a.Status != "valid" {
			i := slices.IndexFunc(a.Challenges, func(ch issuance.Challenge) bool { return ch.Type == "http-01" })
			if i < 0 {
				t.Fatalf("authorization %s has no http-01 challenge", az)
			}
			ka, err := c.KeyAuthorization(acct, a.Challenges[i].Token)
			if err != nil {
				t.Fatal(err)
			}
			r.http01.tokens.Store(a.Challenges[i].Token, ka)
			if _, err := c.AcceptChallenge(ctx, acct, a.Challenges[i].URL); err != nil {
				t.Fatalf("AcceptChallenge: %v", err)
			}
		}
		for a.Status == "pending" {
			if err := r.wait(ctx, a.RetryAfter, poll, "authz"); err != nil {
				t.Fatal(err)
			}
			if a, err = c.GetAuthorization(ctx, acct, az); err != nil {
				t.Fatalf("GetAuthorization: %v", err)
			}
		}
		if a.Status != "valid" {
			t.Fatalf("authorization %s: %q", az, a.Status)
		}
	}
	orderURL := o.URL
	var err error
	for o.Status == "pending" {
		if err := r.wait(ctx, o.RetryAfter, poll, "order"); err != nil {
			t.Fatal(err)
		}
		if o, err = c.GetOrder(ctx, acct, orderURL); err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
	}
	if o.Status != "ready" {
		t.Fatalf("order %s: %q (%v)", orderURL, o.Status, o.Error)
	}
	key := p256(t)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	if o, err = c.Finalize(ctx, acct, o.FinalizeURL, csr); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	for o.Status != "valid" {
		if o.Status != "processing" && o.Status != "ready" {
			t.Fatalf("finalized order %s: %q (%v)", orderURL, o.Status, o.Error)
		}
		if err := r.wait(ctx, o.RetryAfter, poll, "finalized order"); err != nil {
			t.Fatal(err)
		}
		if o, err = c.GetOrder(ctx, acct, orderURL); err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
	}
	cert, err := c.Download(ctx, acct, o.CertificateURL, "")
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	return cert
}

// ---------------------------------------------------------------------
// A CA without renewalInfo in its directory.

// ariStub is a CA whose directory has no renewalInfo; it records the
// payload of each newOrder.
type ariStub struct {
	srv       *httptest.Server
	rootsFile string
	mu        sync.Mutex
	orders    []map[string]any
}

func startARIStub(t *testing.T) *ariStub {
	t.Helper()
	s := &ariStub{}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	s.rootsFile = filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(s.rootsFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *ariStub) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Replay-Nonce", fmt.Sprintf("n%d", time.Now().UnixNano()))
	switch r.URL.Path {
	case "/dir":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"newNonce":%q,"newAccount":%q,"newOrder":%q}`, s.srv.URL+"/nonce", s.srv.URL+"/new-acct", s.srv.URL+"/new-order")
	case "/nonce":
	case "/new-order":
		var jws struct{ Payload string }
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &jws) != nil {
			http.Error(w, "no JWS", http.StatusBadRequest)
			return
		}
		raw, err := base64.RawURLEncoding.DecodeString(jws.Payload)
		var payload map[string]any
		if err != nil || json.Unmarshal(raw, &payload) != nil {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.orders = append(s.orders, payload)
		s.mu.Unlock()
		ids, _ := json.Marshal(payload["identifiers"])
		w.Header().Set("Location", s.srv.URL+"/order/1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"status":"pending","identifiers":%s,"authorizations":[%q],"finalize":%q}`, ids, s.srv.URL+"/authz/1", s.srv.URL+"/finalize/1")
	default:
		http.NotFound(w, r)
	}
}

// Without renewalInfo, RenewalInfo answers ErrNoRenewalInfo (no error of
// the CA, no request) and NewOrder leaves "replaces" out.
func TestRenewalInfoNotOffered(t *testing.T) {
	t.Parallel()
	s := startARIStub(t)
	c := newClient(t, s.rootsFile)
	acct := issuance.Account{DirectoryURL: s.srv.URL + "/dir", URL: s.srv.URL + "/acct/1", Key: p256(t)}
	ctx := context.Background()

	leaf := leafWithAKI(t, []byte{1, 2, 3, 4}, big.NewInt(77))
	ri, err := c.RenewalInfo(ctx, acct, leaf.Raw)
	if !errors.Is(err, issuance.ErrNoRenewalInfo) {
		t.Fatalf("RenewalInfo = %+v, %v; want ErrNoRenewalInfo", ri, err)
	}
	var prob *acmeacct.Problem
	if errors.As(err, &prob) {
		t.Errorf("ErrNoRenewalInfo is a problem: %v", err)
	}

	certID, err := issuance.ARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewOrder(ctx, acct, issuance.OrderRequest{Names: []string{"a.test"}, Replaces: certID}); err != nil {
		t.Fatalf("NewOrder: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.orders) != 1 {
		t.Fatalf("%d newOrder requests, want 1", len(s.orders))
	}
	if v, ok := s.orders[0]["replaces"]; ok {
		t.Errorf("newOrder payload has replaces %v for a CA without renewalInfo", v)
	}
	if !strings.Contains(fmt.Sprint(s.orders[0]["identifiers"]), "a.test") {
		t.Errorf("newOrder payload %v", s.orders[0])
	}
}
