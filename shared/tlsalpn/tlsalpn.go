// Package tlsalpn answers ACME TLS-ALPN-01 challenges (RFC 8737).
//
// A CA validating a name connects to port 443 of that name, sends a TLS
// ClientHello whose SNI is the name and whose ALPN extension offers only
// "acme-tls/1", and expects a self-signed certificate for exactly that name
// carrying the critical id-pe-acmeIdentifier extension, whose value is the
// SHA-256 digest of the challenge's key authorization. The Responder builds
// that certificate during the handshake from the key authorization its
// Source holds for the name; it never serves application data.
package tlsalpn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Protocol is the ALPN protocol name of TLS-ALPN-01 (RFC 8737 §6.2).
const Protocol = "acme-tls/1"

// OIDACMEIdentifier is id-pe-acmeIdentifier (RFC 8737 §6.1), the
// certificate extension that carries the key authorization's digest.
var OIDACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

const (
	// HandshakeTimeout bounds one connection, from accept to close.
	HandshakeTimeout = 10 * time.Second
	// maxNameLen is the longest DNS name in its text form (RFC 1035 §3.1).
	maxNameLen = 253
	// cacheTTL is how long a generated certificate is reused: long enough
	// for every validation connection of one challenge (a CA may connect
	// from several vantage points), short enough to hold nothing stale.
	cacheTTL = 5 * time.Minute
	// cacheSize bounds the cached certificates.
	cacheSize = 1024
	// certLifetime is the validity of a challenge certificate; nobody
	// verifies its chain, but a sane window keeps strict clients quiet.
	certLifetime = 24 * time.Hour
)

// Source holds the key authorizations of pending TLS-ALPN-01 challenges.
//
// TLSALPNKeyAuthorization returns the key authorization ("token.thumbprint")
// of the pending tls-alpn-01 challenge for domain, a lower-case DNS name
// without a trailing dot. It returns an *apperr.Error with code
// apperr.NotFound when no such challenge is pending; any other error is
// transient (the CA's next connection asks again). It is called once per
// handshake, concurrently, with the handshake's context.
type Source interface {
	TLSALPNKeyAuthorization(ctx context.Context, domain string) (string, error)
}

// Responder answers TLS-ALPN-01 handshakes from a Source. It is safe for
// concurrent use.
type Responder struct {
	src Source
	log *slog.Logger

	// now and maxEntries are fixed at New; tests change them.
	now        func() time.Time
	maxEntries int

	mu    sync.Mutex
	cache map[cacheKey]*cacheEntry
}

type cacheKey struct{ domain, keyAuth string }

// cacheEntry is one certificate, ready once done is closed. Concurrent
// handshakes for the same challenge wait for one generation.
type cacheEntry struct {
	done    chan struct{}
	cert    *tls.Certificate
	err     error
	expires time.Time
}

// New returns a Responder that answers from src and logs to log (nil:
// slog.Default()).
func New(src Source, log *slog.Logger) *Responder {
	if log == nil {
		log = slog.Default()
	}
	return &Responder{
		src:        src,
		log:        log,
		now:        time.Now,
		maxEntries: cacheSize,
		cache:      make(map[cacheKey]*cacheEntry),
	}
}

// TLSConfig returns a server configuration that answers TLS-ALPN-01
// ClientHellos and fails every other handshake: its GetCertificate accepts
// only a hello with an SNI name that offers exactly the one ALPN protocol
// "acme-tls/1", and only for a name the Source has a challenge for. Go's
// TLS server answers a refused hello with an internal_error alert.
func (r *Responder) TLSConfig() *tls.Config {
	return &tls.Config{
		NextProtos: []string{Protocol},
		MinVersion: tls.VersionTLS12,
		// A resumed session would skip GetCertificate, and with it the
		// current key authorization: every handshake is a full one.
		SessionTicketsDisabled: true,
		GetCertificate:         r.getCertificate,
	}
}

// errRefused is the handshake error for hellos this responder does not answer.
var errRefused = errors.New("tlsalpn: not a TLS-ALPN-01 challenge this responder answers")

func (r *Responder) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	remote := ""
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	if len(hello.SupportedProtos) != 1 || hello.SupportedProtos[0] != Protocol {
		r.log.Debug("tls-alpn-01: refused a hello that does not offer only acme-tls/1",
			"remote", remote, "alpn", hello.SupportedProtos, "sni", hello.ServerName)
		return nil, errRefused
	}
	domain := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if domain == "" || len(domain) > maxNameLen {
		r.log.Debug("tls-alpn-01: refused a hello without a usable SNI name", "remote", remote, "sni_len", len(hello.ServerName))
		return nil, errRefused
	}
	keyAuth, err := r.src.TLSALPNKeyAuthorization(hello.Context(), domain)
	if err != nil {
		if apperr.CodeOf(err) == apperr.NotFound {
			r.log.Debug("tls-alpn-01: no challenge pending", "remote", remote, "domain", domain)
			return nil, errRefused
		}
		r.log.Warn("tls-alpn-01: key authorization lookup failed", "remote", remote, "domain", domain, "err", err)
		return nil, fmt.Errorf("tlsalpn: look up %s: %w", domain, err)
	}
	return r.certificate(domain, keyAuth)
}

// certificate returns the challenge certificate for (domain, keyAuth),
// from the cache or newly built.
func (r *Responder) certificate(domain, keyAuth string) (*tls.Certificate, error) {
	k := cacheKey{domain, keyAuth}
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[k]
	if ok && e.expires.After(now) {
		r.mu.Unlock()
		<-e.done
		return e.cert, e.err
	}
	if len(r.cache) >= r.maxEntries {
		r.evictLocked(now)
	}
	e = &cacheEntry{done: make(chan struct{}), expires: now.Add(cacheTTL)}
	r.cache[k] = e
	r.mu.Unlock()

	e.cert, e.err = ChallengeCertificate(domain, keyAuth, now)
	close(e.done)
	if e.err != nil {
		r.mu.Lock()
		if r.cache[k] == e {
			delete(r.cache, k)
		}
		r.mu.Unlock()
	}
	return e.cert, e.err
}

// evictLocked makes room for one entry: it drops every expired entry and,
// if the cache is still full, the one closest to expiry (the oldest).
func (r *Responder) evictLocked(now time.Time) {
	var oldest cacheKey
	var oldestExp time.Time
	for k, e := range r.cache {
		if !e.expires.After(now) {
			delete(r.cache, k)
			continue
		}
		if oldestExp.IsZero() || e.expires.Before(oldestExp) {
			oldest, oldestExp = k, e.expires
		}
	}
	if len(r.cache) >= r.maxEntries && !oldestExp.IsZero() {
		delete(r.cache, oldest)
	}
}

// ChallengeCertificate builds the self-signed TLS-ALPN-01 certificate for
// domain (RFC 8737 §3): a new ECDSA P-256 key, an empty subject, domain as
// the only subject alternative name, and the critical id-pe-acmeIdentifier
// extension holding the DER OCTET STRING of SHA-256(keyAuth); no other
// extensions. now anchors its validity.
func ChallengeCertificate(domain, keyAuth string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsalpn: generate key: %w", err)
	}
	digest := sha256.Sum256([]byte(keyAuth))
	value, err := asn1.Marshal(digest[:])
	if err != nil {
		return nil, fmt.Errorf("tlsalpn: encode the acmeIdentifier extension: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlsalpn: serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		DNSNames:     []string{domain},
		ExtraExtensions: []pkix.Extension{
			{Id: OIDACMEIdentifier, Critical: true, Value: value},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tlsalpn: create the certificate for %s: %w", domain, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsalpn: parse the certificate for %s: %w", domain, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Serve answers TLS-ALPN-01 handshakes on l until ctx ends: each accepted
// connection gets one handshake (at most HandshakeTimeout) and is closed;
// no application data is read or written. When ctx ends, Serve closes l,
// waits for the handshakes in flight and returns nil. It returns an error
// (and closes l) only if accepting fails for good.
func (r *Responder) Serve(ctx context.Context, l net.Listener) error {
	cfg := r.TLSConfig()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	defer l.Close()
	var conns sync.WaitGroup
	defer conns.Wait()
	// In-flight handshakes outlive ctx (each is bounded by its deadline),
	// so a shutdown lets them finish.
	hsCtx := context.WithoutCancel(ctx)
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Anything but a closed listener (too many open files, an
			// aborted connection) passes: back off and accept again.
			if !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				r.log.Warn("tls-alpn-01: accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("tlsalpn: accept: %w", err)
		}
		backoff = 0
		conns.Go(func() { r.handshake(hsCtx, cfg, c) })
	}
}

func (r *Responder) handshake(ctx context.Context, cfg *tls.Config, c net.Conn) {
	defer c.Close()
	deadline := time.Now().Add(HandshakeTimeout)
	_ = c.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		r.log.Debug("tls-alpn-01: handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	st := tc.ConnectionState()
	r.log.Debug("tls-alpn-01: answered", "remote", c.RemoteAddr().String(), "domain", st.ServerName)
	_ = tc.Close()
}

// ListenAndServe listens on the TCP address addr (e.g. ":443") and Serves
// there until ctx ends.
func (r *Responder) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tlsalpn: listen on %s: %w", addr, err)
	}
	return r.Serve(ctx, l)
}
