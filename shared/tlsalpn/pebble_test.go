package tlsalpn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/tlsalpn"
	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
)

// TestPebbleValidatesTLSALPN01 has a real CA validate a name through the
// Responder: Pebble's VA resolves the name with the in-test DNS
// (127.0.0.1) and connects to the responder's port with SNI and
// acme-tls/1, as a CA connects to port 443.
func TestPebbleValidatesTLSALPN01(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	src := newMemSource()
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- tlsalpn.New(src, nil).Serve(ctx, l) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after the test ended")
		}
	})
	p := pebbletest.Start(t, pebbletest.Options{TLSPort: port, DNSServer: pebbletest.StartDNS(t)})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	core, err := api.New(p.HTTPClient(), "certfleet-test", p.DirectoryURL, "", key)
	if err != nil {
		t.Fatalf("lego api.New: %v", err)
	}
	if _, err := core.Accounts.New(acme.Account{TermsOfServiceAgreed: true}); err != nil {
		t.Fatalf("new account: %v", err)
	}
	// The right key authorization: the authorization becomes valid and
	// the order ready.
	const name = "alpn.certfleet.test"
	authz, orderURL := authorize(t, core, src, name, func(ka string) string { return ka })
	if authz.Status != acme.StatusValid {
		t.Fatalf("authorization is %s, want valid: %s", authz.Status, problems(authz))
	}
	if q := src.questions(); len(q) == 0 || q[0] != name {
		t.Errorf("the CA's handshakes asked the Source for %q, want %s", q, name)
	}
	o, err := core.Orders.Get(orderURL)
	if err != nil {
		t.Fatalf("get order: %v", err)
	}
	if o.Status != acme.StatusReady {
		t.Errorf("order is %s after its only authorization became valid, want ready", o.Status)
	}

	// A wrong key authorization: the same CA refuses it, so the valid
	// result above is the certificate's doing.
	authz, _ = authorize(t, core, src, "wrong.certfleet.test", func(ka string) string { return ka + "x" })
	if authz.Status != acme.StatusInvalid || !strings.Contains(problems(authz), "tls-alpn-01") {
		t.Fatalf("authorization with a wrong key authorization is %s (%s), want invalid", authz.Status, problems(authz))
	}
	t.Logf("wrong key authorization: %s", problems(authz))
}

// authorize orders name, puts serve(key authorization) into src for its
// tls-alpn-01 challenge, accepts the challenge, and polls the authorization
// until it leaves pending; it returns the authorization and the order URL.
func authorize(t *testing.T, core *api.Core, src *memSource, name string, serve func(string) string) (acme.Authorization, string) {
	t.Helper()
	order, err := core.Orders.New([]string{name})
	if err != nil {
		t.Fatalf("new order for %s: %v", name, err)
	}
	if len(order.Authorizations) != 1 {
		t.Fatalf("order has %d authorizations, want 1", len(order.Authorizations))
	}
	authzURL := order.Authorizations[0]
	authz, err := core.Authorizations.Get(authzURL)
	if err != nil {
		t.Fatalf("get authorization: %v", err)
	}
	var chal *acme.Challenge
	for i, c := range authz.Challenges {
		if c.Type == "tls-alpn-01" {
			chal = &authz.Challenges[i]
		}
	}
	if chal == nil {
		t.Fatalf("authorization offers no tls-alpn-01 challenge: %+v", authz.Challenges)
	}
	ka, err := core.GetKeyAuthorization(chal.Token)
	if err != nil {
		t.Fatal(err)
	}
	src.set(name, serve(ka))
	if _, err := core.Challenges.New(chal.URL); err != nil {
		t.Fatalf("accept challenge: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		authz, err = core.Authorizations.Get(authzURL)
		if err != nil {
			t.Fatalf("poll authorization: %v", err)
		}
		if authz.Status != acme.StatusPending && authz.Status != acme.StatusProcessing {
			return authz, order.Location
		}
		if time.Now().After(deadline) {
			t.Fatalf("authorization for %s still %s after 20s", name, authz.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// problems lists the challenge errors of authz.
func problems(authz acme.Authorization) string {
	var out []string
	for _, c := range authz.Challenges {
		if c.Error != nil {
			out = append(out, c.Type+": "+c.Error.Error())
		}
	}
	return strings.Join(out, "; ")
}
