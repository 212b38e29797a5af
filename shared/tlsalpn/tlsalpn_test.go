package tlsalpn_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/tlsalpn"
)

// memSource is an in-memory Source: domain → key authorization.
type memSource struct {
	mu    sync.Mutex
	keys  map[string]string
	fail  error
	asked []string
}

func newMemSource() *memSource { return &memSource{keys: map[string]string{}} }

func (s *memSource) set(domain, keyAuth string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[domain] = keyAuth
}

func (s *memSource) TLSALPNKeyAuthorization(_ context.Context, domain string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, domain)
	if s.fail != nil {
		return "", s.fail
	}
	ka, ok := s.keys[domain]
	if !ok {
		return "", apperr.New(apperr.NotFound, "no tls-alpn-01 challenge pending for %s", domain)
	}
	return ka, nil
}

func (s *memSource) questions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

var _ tlsalpn.Source = (*memSource)(nil)

// logRecorder keeps every log record's level and message.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Level.String()+" "+r.Message)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

// serve starts a Responder over src on a loopback port and returns its
// address; it stops when the test ends, and the test fails if Serve
// returns an error.
func serve(t *testing.T, src tlsalpn.Source, log *slog.Logger) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tlsalpn.New(src, log).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return l.Addr().String()
}

// handshake dials addr as a validating CA would (or not, per protos and
// sni) and returns the connection state.
func handshake(addr, sni string, protos ...string) (tls.ConnectionState, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		ServerName:         sni,
		NextProtos:         protos,
		InsecureSkipVerify: true, // the challenge certificate is self-signed by design
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState(), nil
}

// acmeDigest returns the id-pe-acmeIdentifier value of cert and whether
// the extension is critical; it fails the test if there is none.
func acmeDigest(t *testing.T, cert *x509.Certificate) ([]byte, bool) {
	t.Helper()
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(tlsalpn.OIDACMEIdentifier) {
			var v []byte
			rest, err := asn1.Unmarshal(ext.Value, &v)
			if err != nil || len(rest) != 0 {
				t.Fatalf("acmeIdentifier value %x is not one DER OCTET STRING: %v", ext.Value, err)
			}
			return v, ext.Critical
		}
	}
	t.Fatalf("certificate has no id-pe-acmeIdentifier (%v) extension", tlsalpn.OIDACMEIdentifier)
	return nil, false
}

func TestAnswersChallenge(t *testing.T) {
	t.Parallel()
	src := newMemSource()
	const ka = "tok-1.thumbprint-1"
	src.set("alpn.certfleet.test", ka)
	addr := serve(t, src, nil)

	st, err := handshake(addr, "ALPN.Certfleet.Test", tlsalpn.Protocol)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if st.NegotiatedProtocol != tlsalpn.Protocol {
		t.Errorf("negotiated protocol %q, want %q", st.NegotiatedProtocol, tlsalpn.Protocol)
	}
	if len(st.PeerCertificates) != 1 {
		t.Fatalf("%d certificates presented, want 1", len(st.PeerCertificates))
	}
	leaf := st.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "alpn.certfleet.test" || len(leaf.IPAddresses)+len(leaf.EmailAddresses)+len(leaf.URIs) != 0 {
		t.Errorf("SAN: DNS %q IP %v email %q URI %v, want only DNS alpn.certfleet.test",
			leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs)
	}
	got, critical := acmeDigest(t, leaf)
	want := sha256.Sum256([]byte(ka))
	if !bytes.Equal(got, want[:]) {
		t.Errorf("acmeIdentifier = %x, want SHA-256(key authorization) %x", got, want)
	}
	if !critical {
		t.Error("the acmeIdentifier extension is not critical")
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil || !bytes.Equal(leaf.RawIssuer, leaf.RawSubject) {
		t.Errorf("certificate is not self-signed: %v", err)
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		t.Errorf("certificate valid %v..%v, not now", leaf.NotBefore, leaf.NotAfter)
	}
	if q := src.questions(); len(q) != 1 || q[0] != "alpn.certfleet.test" {
		t.Errorf("Source asked for %q, want the lower-cased SNI once", q)
	}
}

func TestRefusesOtherHandshakes(t *testing.T) {
	t.Parallel()
	src := newMemSource()
	src.set("alpn.certfleet.test", "tok.thumb")
	rec := &logRecorder{}
	addr := serve(t, src, slog.New(rec))
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62)
	if len(long) != 254 {
		t.Fatalf("long name is %d characters", len(long))
	}

	for _, tc := range []struct {
		name   string
		sni    string
		protos []string
		asks   bool // the Source is consulted
	}{
		{"no ALPN", "alpn.certfleet.test", nil, false},
		{"h2 only", "alpn.certfleet.test", []string{"h2"}, false},
		{"acme-tls/1 among others", "alpn.certfleet.test", []string{"h2", tlsalpn.Protocol}, false},
		{"no SNI", "", []string{tlsalpn.Protocol}, false},
		{"name over 253 characters", long, []string{tlsalpn.Protocol}, false},
		{"unknown domain", "other.certfleet.test", []string{tlsalpn.Protocol}, true},
	} {
		before := len(src.questions())
		st, err := handshake(addr, tc.sni, tc.protos...)
		if err == nil {
			t.Errorf("%s: handshake succeeded (certificate for %q)", tc.name, st.PeerCertificates[0].DNSNames)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if asked := len(src.questions()) > before; asked != tc.asks {
			t.Errorf("%s: Source consulted = %v, want %v", tc.name, asked, tc.asks)
		}
	}
	if !rec.has("DEBUG tls-alpn-01: no challenge pending") {
		t.Errorf("unknown domain not logged at debug: %q", rec.recs)
	}
	if !rec.has("DEBUG tls-alpn-01: refused a hello that does not offer only acme-tls/1") {
		t.Errorf("hello without acme-tls/1 not logged at debug: %q", rec.recs)
	}
	if rec.has("WARN") || rec.has("ERROR") {
		t.Errorf("refused handshakes logged above debug: %q", rec.recs)
	}
}

func TestSourceErrorFailsHandshake(t *testing.T) {
	t.Parallel()
	src := newMemSource()
	src.set("alpn.certfleet.test", "tok.thumb")
	src.fail = errors.New("store unavailable")
	rec := &logRecorder{}
	addr := serve(t, src, slog.New(rec))
	if _, err := handshake(addr, "alpn.certfleet.test", tlsalpn.Protocol); err == nil {
		t.Fatal("handshake succeeded while the Source fails")
	}
	if !rec.has("WARN tls-alpn-01: key authorization lookup failed") {
		t.Errorf("a failing Source is not logged as a warning: %q", rec.recs)
	}
	src.mu.Lock()
	src.fail = nil
	src.mu.Unlock()
	if _, err := handshake(addr, "alpn.certfleet.test", tlsalpn.Protocol); err != nil {
		t.Fatalf("handshake after the Source recovered: %v", err)
	}
}

func TestCacheReusesCertificate(t *testing.T) {
	t.Parallel()
	src := newMemSource()
	src.set("alpn.certfleet.test", "tok-1.thumb")
	addr := serve(t, src, nil)

	leaf := func(t *testing.T) *x509.Certificate {
		t.Helper()
		st, err := handshake(addr, "alpn.certfleet.test", tlsalpn.Protocol)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return st.PeerCertificates[0]
	}
	first := leaf(t)
	// A CA validates from several vantage points at once: every
	// connection of one challenge gets the same certificate.
	var wg sync.WaitGroup
	certs := make([]*x509.Certificate, 8)
	for i := range certs {
		wg.Go(func() {
			st, err := handshake(addr, "alpn.certfleet.test", tlsalpn.Protocol)
			if err != nil {
				t.Errorf("concurrent handshake: %v", err)
				return
			}
			certs[i] = st.PeerCertificates[0]
		})
	}
	wg.Wait()
	for _, c := range certs {
		if c != nil && !bytes.Equal(c.Raw, first.Raw) {
			t.Fatalf("handshake for the same challenge got another certificate (serial %v, first %v)", c.SerialNumber, first.SerialNumber)
		}
	}

	// A new challenge for the name (a new key authorization) gets a new
	// certificate carrying the new digest.
	src.set("alpn.certfleet.test", "tok-2.thumb")
	second := leaf(t)
	if bytes.Equal(second.Raw, first.Raw) {
		t.Fatal("a new key authorization was answered with the cached certificate of the old one")
	}
	got, _ := acmeDigest(t, second)
	if want := sha256.Sum256([]byte("tok-2.thumb")); !bytes.Equal(got, want[:]) {
		t.Errorf("acmeIdentifier = %x, want %x", got, want)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	t.Parallel()
	src := newMemSource()
	src.set("alpn.certfleet.test", "tok.thumb")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tlsalpn.New(src, nil).Serve(ctx, l) }()
	if _, err := handshake(addr, "alpn.certfleet.test", tlsalpn.Protocol); err != nil {
		t.Fatalf("handshake: %v", err)
	}

	// A connection that never says hello is in flight at shutdown; Serve
	// waits for it (its deadline bounds the wait) but accepts no more.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond) // let it be accepted
	cancel()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		// The listener may close a moment after cancel; retry once.
		c.Close()
		time.Sleep(100 * time.Millisecond)
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatal("the port still accepts connections after the context ended")
		}
	}
	idle.Close() // the client gives up: the in-flight handshake ends
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil after its context ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended and its connections closed")
	}
}

func TestListenAndServe(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = tlsalpn.New(newMemSource(), nil).ListenAndServe(context.Background(), busy.Addr().String())
	if err == nil || !strings.HasPrefix(err.Error(), "tlsalpn: listen on ") {
		t.Fatalf("ListenAndServe on a busy port: %v", err)
	}

	// With an ended context it returns at once, without serving.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- tlsalpn.New(newMemSource(), nil).ListenAndServe(ctx, "127.0.0.1:0") }()
	select {
	case err := <-done:
		t.Logf("ListenAndServe with an ended context: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe with an ended context did not return")
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	cfg := tlsalpn.New(newMemSource(), nil).TLSConfig()
	if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "acme-tls/1" {
		t.Errorf("NextProtos = %q, want [acme-tls/1]", cfg.NextProtos)
	}
	if !cfg.SessionTicketsDisabled || cfg.MinVersion < tls.VersionTLS12 {
		t.Errorf("SessionTicketsDisabled = %v, MinVersion = %x: want full handshakes, TLS 1.2 or later", cfg.SessionTicketsDisabled, cfg.MinVersion)
	}
	if cfg.GetCertificate == nil {
		t.Fatal("no GetCertificate")
	}
	if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "alpn.certfleet.test", SupportedProtos: []string{"http/1.1"}}); err == nil {
		t.Error("GetCertificate answered a hello without acme-tls/1")
	}
}
