// Package acme is the adapter to ACME servers (RFC 8555): it implements
// acmeacct.CA and issuance.ACME (orders.go) with lego, and it is the only
// package that imports lego.
//
// Errors follow the port's contract: a refusal by the CA (a 4xx problem
// document) is an *acmeacct.Problem, not worth retrying; anything else —
// the network, TLS, timeouts, 5xx answers, rate limits, nonces the CA
// kept rejecting — is a plain error, worth retrying later. A request that
// no retry can fix because it is malformed before it reaches the CA (a
// missing or unsupported key, an EAB HMAC key that is not base64url, a
// directory URL that is not https) is also an *acmeacct.Problem, with
// Status 0. Every plain error message starts with "acme: ".
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
)

// DefaultTimeout bounds one Directory or Register call when Config.Timeout
// is zero.
const DefaultTimeout = 30 * time.Second

// maxDirectorySize bounds the directory document read.
const maxDirectorySize = 1 << 20

// Problem types used for requests refused before they reach the CA.
const (
	problemMalformed    = "urn:ietf:params:acme:error:malformed"
	problemBadPublicKey = "urn:ietf:params:acme:error:badPublicKey"
)

// Config configures a Client.
type Config struct {
	// RootsPEMFile is a PEM file of extra roots to trust for ACME servers
	// (CERTFLEET_CA_ROOTS), added to the system pool; empty means the
	// system pool only.
	RootsPEMFile string
	// Timeout bounds each call, all its HTTP requests together; zero means
	// DefaultTimeout. A context deadline that comes first wins.
	Timeout time.Duration
	// UserAgent prefixes the User-Agent header; empty means "certfleet".
	UserAgent string
}

// Client talks to ACME servers. It is safe for concurrent use.
type Client struct {
	transport *http.Transport
	timeout   time.Duration
	userAgent string
	// cores holds the lego api.Core of each account (orders.go).
	cores coreCache
}

var _ acmeacct.CA = (*Client)(nil)

// New returns a Client. It fails when RootsPEMFile cannot be read or holds
// no certificate.
func New(cfg Config) (*Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if cfg.RootsPEMFile != "" {
		pemBytes, err := os.ReadFile(cfg.RootsPEMFile)
		if err != nil {
			return nil, fmt.Errorf("acme: read roots: %w", err)
		}
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("acme: roots file %s holds no PEM certificate", cfg.RootsPEMFile)
		}
	}
	base, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("acme: http.DefaultTransport is not an *http.Transport")
	}
	transport := base.Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	c := &Client{transport: transport, timeout: cfg.Timeout, userAgent: cfg.UserAgent}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.userAgent == "" {
		c.userAgent = "certfleet"
	}
	return c, nil
}

// Directory reads the meta object of the ACME directory at directoryURL.
// Every error is a plain error (the caller may retry), except a
// directoryURL that is not an https URL, which is an *acmeacct.Problem
// with Status 0.
func (c *Client) Directory(ctx context.Context, directoryURL string) (acmeacct.DirectoryMeta, error) {
	if err := checkDirectoryURL(directoryURL); err != nil {
		return acmeacct.DirectoryMeta{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, directoryURL, nil)
	if err != nil {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.httpClient(ctx).Do(req)
	if err != nil {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDirectorySize+1))
	if err != nil {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: read: %w", directoryURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		var prob legoacme.ProblemDetails
		if json.Unmarshal(body, &prob) == nil && prob.Type != "" {
			return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: %s: %s: %s", directoryURL, resp.Status, prob.Type, prob.Detail)
		}
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: %s", directoryURL, resp.Status)
	}
	if len(body) > maxDirectorySize {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: larger than %d bytes", directoryURL, maxDirectorySize)
	}
	var dir legoacme.Directory
	if err := json.Unmarshal(body, &dir); err != nil {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: not an ACME directory: %w", directoryURL, err)
	}
	if dir.NewNonceURL == "" || dir.NewAccountURL == "" || dir.NewOrderURL == "" {
		return acmeacct.DirectoryMeta{}, fmt.Errorf("acme: directory %s: not an ACME directory (newNonce, newAccount or newOrder missing)", directoryURL)
	}
	m := dir.Meta
	meta := acmeacct.DirectoryMeta{
		TermsOfService:          m.TermsOfService,
		Website:                 m.Website,
		ExternalAccountRequired: m.ExternalAccountRequired,
		FetchedAt:               time.Now().UTC(),
	}
	if len(m.CaaIdentities) > 0 {
		meta.CAAIdentities = m.CaaIdentities
	}
	if len(m.Profiles) > 0 {
		meta.Profiles = m.Profiles
	}
	return meta, nil
}

// Register creates the account for r.Key at the CA, or finds the one that
// already exists for that key, agreeing to the terms of service, and
// returns its URL. With r.EABKid set it binds the external account
// (r.EABHMACKey, base64url). A refusal by the CA is an *acmeacct.Problem;
// other errors are plain (transient), see the package comment.
//
// lego takes no context, so ctx (and Config.Timeout) bound every HTTP
// request lego makes: when ctx ends, the request in flight fails and
// Register returns.
func (c *Client) Register(ctx context.Context, r acmeacct.Registration) (string, error) {
	if err := checkDirectoryURL(r.DirectoryURL); err != nil {
		return "", err
	}
	key, err := accountKey(r.Key)
	if err != nil {
		return "", err
	}
	if (r.EABKid == "") != (r.EABHMACKey == "") {
		return "", &acmeacct.Problem{Type: problemMalformed, Detail: "EAB key id and HMAC key must be given together"}
	}
	if r.EABKid != "" {
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(r.EABHMACKey, "=")); err != nil {
			return "", &acmeacct.Problem{Type: problemMalformed, Detail: "EAB HMAC key is not base64url"}
		}
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("acme: register: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	cfg := &lego.Config{
		CADirURL:   r.DirectoryURL,
		User:       &user{email: r.Email, key: key},
		UserAgent:  c.userAgent,
		HTTPClient: c.httpClient(ctx),
		// Unused for registration; lego.NewClient wants a key type.
		Certificate: lego.CertificateConfig{KeyType: certcrypto.EC256, Timeout: c.timeout},
	}
	client, err := lego.NewClient(cfg)
	if err != nil {
		return "", classify(ctx, "register", err)
	}
	var res *registration.Resource
	if r.EABKid != "" {
		res, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
			TermsOfServiceAgreed: true,
			Kid:                  r.EABKid,
			HmacEncoded:          r.EABHMACKey,
		})
	} else {
		res, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	}
	if err != nil {
		return "", classify(ctx, "register", err)
	}
	if res == nil || res.URI == "" {
		return "", errors.New("acme: register: the CA returned no account URL (Location)")
	}
	return res.URI, nil
}

// classify turns a lego error into the port's errors: a 4xx problem
// document is a permanent *acmeacct.Problem; rate limits, bad nonces, 5xx
// problems and everything else are plain errors.
func classify(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		// lego wraps some failures without %w; keep the cause visible.
		return fmt.Errorf("acme: %s: %w (%v)", op, ctxErr, err)
	}
	var rateLimited *legoacme.RateLimitedError
	if errors.As(err, &rateLimited) {
		if rateLimited.RetryAfter != "" {
			return fmt.Errorf("acme: %s: rate limited, retry after %s: %w", op, rateLimited.RetryAfter, err)
		}
		return fmt.Errorf("acme: %s: rate limited: %w", op, err)
	}
	var badNonce *legoacme.NonceError
	if errors.As(err, &badNonce) {
		return fmt.Errorf("acme: %s: %w", op, err)
	}
	var prob *legoacme.ProblemDetails
	if errors.As(err, &prob) && prob.HTTPStatus >= 400 && prob.HTTPStatus < 500 &&
		prob.HTTPStatus != http.StatusRequestTimeout && prob.HTTPStatus != http.StatusTooManyRequests {
		return problemOf(prob)
	}
	return fmt.Errorf("acme: %s: %w", op, err)
}

// problemOf converts a problem document, subproblems folded into Detail.
func problemOf(prob *legoacme.ProblemDetails) *acmeacct.Problem {
	detail := prob.Detail
	for _, sub := range prob.SubProblems {
		detail += "; " + sub.Identifier.Value + ": " + sub.Type + ": " + sub.Detail
	}
	return &acmeacct.Problem{Type: prob.Type, Detail: detail, Status: prob.HTTPStatus}
}

// httpClient returns a client whose every request is bound to ctx: lego
// builds its requests without a context, and it wraps the client's
// transport, so each call gets its own client over the shared transport.
func (c *Client) httpClient(ctx context.Context) *http.Client {
	return &http.Client{Transport: ctxTransport{ctx: ctx, base: c.transport}}
}

type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(req.WithContext(t.ctx))
}

// user is lego's view of the account being registered.
type user struct {
	email string
	key   crypto.PrivateKey
}

func (u *user) GetEmail() string                        { return u.email }
func (u *user) GetRegistration() *registration.Resource { return nil }
func (u *user) GetPrivateKey() crypto.PrivateKey        { return u.key }

// accountKey checks that lego can sign with k: RSA, or ECDSA P-256/P-384.
func accountKey(k crypto.Signer) (crypto.PrivateKey, error) {
	switch key := k.(type) {
	case nil:
		return nil, &acmeacct.Problem{Type: problemMalformed, Detail: "no account key"}
	case *rsa.PrivateKey:
		return key, nil
	case *ecdsa.PrivateKey:
		if key.Curve == elliptic.P256() || key.Curve == elliptic.P384() {
			return key, nil
		}
		return nil, &acmeacct.Problem{Type: problemBadPublicKey, Detail: "ECDSA account key on curve " + key.Curve.Params().Name + " (P-256 or P-384 only)"}
	default:
		return nil, &acmeacct.Problem{Type: problemBadPublicKey, Detail: fmt.Sprintf("account key of type %T (RSA or ECDSA P-256/P-384 only)", k)}
	}
}

func checkDirectoryURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return &acmeacct.Problem{Type: problemMalformed, Detail: fmt.Sprintf("directory URL %q is not an https URL", s)}
	}
	return nil
}

// lego logs through its own global logger, with account emails and
// domain names in its lines; certfleet logs what matters itself, so
// lego's lines are dropped.
func init() { legolog.Logger = log.New(io.Discard, "", 0) }
