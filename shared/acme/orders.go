package acme

// The issuance port (issuance.ACME): orders, authorizations, challenges,
// finalization, download and revocation through lego's low-level acme/api.
//
// lego's api.Core takes no context and hides most response headers, so
// each Core is given its own http.Client over the shared transport, with a
// callTransport that binds the current call's context to every request
// and keeps the call's last response (Retry-After, Link) for us to read.
// A Core is therefore used by one call at a time: the Client keeps idle
// Cores per (directory URL, account URL) and lends one to each call. A
// step machine that sends one account's calls one after another uses one
// Core; overlapping calls borrow more. Every Core after the first for a
// directory is built from the cached directory without a request, and an
// idle Core keeps the nonce of its last response, so a call costs one
// exchange (two for a Core that had to be made: its first nonce).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/issuance"
	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
)

var _ issuance.ACME = (*Client)(nil)

const (
	// coreIdleTTL is how long an idle Core is kept. Its nonce may have
	// gone stale after that (a stale nonce costs lego a badNonce answer
	// and a retry after a backoff of about 200 ms; a new Core costs one
	// HEAD newNonce), and it holds the account key in memory.
	coreIdleTTL = 30 * time.Second
	// maxIdleCores bounds the idle Cores kept per account.
	maxIdleCores = 16
	// maxCapturedBody bounds the response body kept for Finalize.
	maxCapturedBody = 1 << 20
)

// Problem types of requests refused before they reach the CA.
const (
	problemBadRevocationReason = "urn:ietf:params:acme:error:badRevocationReason"
	// problemBlank is RFC 7807's type of a problem without a document:
	// a 4xx answer whose body is no problem document (Pebble answers an
	// unknown order or authorization with a bare 404).
	problemBlank = "about:blank"
)

// NewOrder creates an order for req.Names (IP addresses become "ip"
// identifiers) with req.Profile and req.Replaces. Through lego v4.35.2,
// Replaces is sent only when the directory has renewalInfo. An order the
// CA refuses with alreadyReplaced is returned as that *acmeacct.Problem
// (issuance.ProblemAlreadyReplaced, 409), as the port says: lego would
// send it again at once without Replaces, and the call's transport keeps
// that second request from leaving (see callTransport.stopReplaced).
func (c *Client) NewOrder(ctx context.Context, acct issuance.Account, req issuance.OrderRequest) (issuance.Order, error) {
	if len(req.Names) == 0 {
		return issuance.Order{}, &acmeacct.Problem{Type: problemMalformed, Detail: "an order needs at least one name"}
	}
	for _, n := range req.Names {
		if n == "" {
			return issuance.Order{}, &acmeacct.Problem{Type: problemMalformed, Detail: "empty name in an order"}
		}
	}
	cl, err := c.begin(ctx, acct, "new order")
	if err != nil {
		return issuance.Order{}, err
	}
	defer cl.end()
	if req.Replaces != "" {
		cl.tr.capture = true
		cl.tr.stopReplaced = true
	}
	o, err := cl.core.Orders.NewWithOptions(req.Names, &api.OrderOptions{Profile: req.Profile, ReplacesCertID: req.Replaces})
	if err != nil {
		return issuance.Order{}, cl.fail(err)
	}
	if o.Location == "" {
		return issuance.Order{}, errors.New("acme: new order: the CA returned no order URL (Location)")
	}
	return cl.order(o.Order, o.Location), nil
}

// GetOrder reads an order.
func (c *Client) GetOrder(ctx context.Context, acct issuance.Account, orderURL string) (issuance.Order, error) {
	if err := checkURL(orderURL, "order"); err != nil {
		return issuance.Order{}, err
	}
	cl, err := c.begin(ctx, acct, "get order")
	if err != nil {
		return issuance.Order{}, err
	}
	defer cl.end()
	o, err := cl.core.Orders.Get(orderURL)
	if err != nil {
		return issuance.Order{}, cl.fail(err)
	}
	return cl.order(o.Order, orderURL), nil
}

// GetAuthorization reads an authorization.
func (c *Client) GetAuthorization(ctx context.Context, acct issuance.Account, authzURL string) (issuance.Authorization, error) {
	if err := checkURL(authzURL, "authorization"); err != nil {
		return issuance.Authorization{}, err
	}
	cl, err := c.begin(ctx, acct, "get authorization")
	if err != nil {
		return issuance.Authorization{}, err
	}
	defer cl.end()
	a, err := cl.core.Authorizations.Get(authzURL)
	if err != nil {
		return issuance.Authorization{}, cl.fail(err)
	}
	out := issuance.Authorization{
		URL:        authzURL,
		Status:     a.Status,
		Identifier: a.Identifier.Value,
		Wildcard:   a.Wildcard,
		RetryAfter: cl.retryAfter(),
	}
	for _, ch := range a.Challenges {
		out.Challenges = append(out.Challenges, challengeOf(ch))
	}
	return out, nil
}

// AcceptChallenge asks the CA to validate the challenge. The challenge's
// Retry-After, which lego reads, has no place in issuance.Challenge: the
// authorization's is what the poll step reads.
func (c *Client) AcceptChallenge(ctx context.Context, acct issuance.Account, challengeURL string) (issuance.Challenge, error) {
	if err := checkURL(challengeURL, "challenge"); err != nil {
		return issuance.Challenge{}, err
	}
	cl, err := c.begin(ctx, acct, "accept challenge")
	if err != nil {
		return issuance.Challenge{}, err
	}
	defer cl.end()
	ch, err := cl.core.Challenges.New(challengeURL)
	if err != nil {
		return issuance.Challenge{}, cl.fail(err)
	}
	return challengeOf(ch.Challenge), nil
}

// KeyAuthorization returns token + "." + the base64url SHA-256 JWK
// thumbprint (RFC 7638) of the account key. It makes no request.
func (c *Client) KeyAuthorization(acct issuance.Account, token string) (string, error) {
	if token == "" {
		return "", &acmeacct.Problem{Type: problemMalformed, Detail: "empty challenge token"}
	}
	if _, err := accountKey(acct.Key); err != nil {
		return "", err
	}
	tp, err := thumbprint(acct.Key.Public())
	if err != nil {
		return "", err
	}
	return token + "." + tp, nil
}

// Finalize submits the CSR. The returned Order's URL is the Location the
// CA sent, if any: RFC 8555 does not require one on finalize, so keep the
// URL NewOrder returned. An order the CA made invalid is returned as such
// (Status "invalid", Error set) with a nil error, as GetOrder would.
func (c *Client) Finalize(ctx context.Context, acct issuance.Account, finalizeURL string, csr []byte) (issuance.Order, error) {
	if err := checkURL(finalizeURL, "finalize"); err != nil {
		return issuance.Order{}, err
	}
	if len(csr) == 0 {
		return issuance.Order{}, &acmeacct.Problem{Type: problemMalformed, Detail: "empty CSR"}
	}
	cl, err := c.begin(ctx, acct, "finalize")
	if err != nil {
		return issuance.Order{}, err
	}
	defer cl.end()
	cl.tr.capture = true
	o, err := cl.core.Orders.UpdateForCSR(finalizeURL, csr)
	if err != nil {
		// lego turns an order answered with status "invalid" into an
		// error; the body it read is the order.
		if last := cl.tr.last; last != nil && last.StatusCode < 300 {
			var inv legoacme.Order
			if json.Unmarshal(cl.tr.body.Bytes(), &inv) == nil && inv.Status == legoacme.StatusInvalid {
				return cl.order(inv, last.Header.Get("Location")), nil
			}
		}
		return issuance.Order{}, cl.fail(err)
	}
	loc := ""
	if cl.tr.last != nil {
		loc = cl.tr.last.Header.Get("Location")
	}
	return cl.order(o.Order, loc), nil
}

// Download fetches the chain at certURL as the CA serves it, with the
// URLs of its Link rel="alternate" chains. With preferredChain set and the
// default chain's top issuer CN not matching it, the alternates are
// fetched in turn and the first whose top issuer CN matches is returned
// instead (its Alternates then list the default URL and the others); no
// match returns the default chain. An alternate the CA refuses is skipped.
func (c *Client) Download(ctx context.Context, acct issuance.Account, certURL, preferredChain string) (issuance.Certificate, error) {
	if err := checkURL(certURL, "certificate"); err != nil {
		return issuance.Certificate{}, err
	}
	cl, err := c.begin(ctx, acct, "download")
	if err != nil {
		return issuance.Certificate{}, err
	}
	defer cl.end()
	chain, _, err := cl.core.Certificates.Get(certURL, true)
	if err != nil {
		return issuance.Certificate{}, cl.fail(err)
	}
	alts := alternates(cl.tr.last, certURL)
	if preferredChain == "" || len(alts) == 0 || topIssuerCN(chain) == preferredChain {
		return issuance.Certificate{ChainPEM: chain, Alternates: alts}, nil
	}
	for i, alt := range alts {
		altChain, _, err := cl.core.Certificates.Get(alt, true)
		if err != nil {
			err = cl.fail(err)
			var prob *acmeacct.Problem
			if errors.As(err, &prob) {
				continue
			}
			return issuance.Certificate{}, err
		}
		if topIssuerCN(altChain) == preferredChain {
			others := append([]string{certURL}, alts[:i]...)
			others = append(others, alts[i+1:]...)
			return issuance.Certificate{ChainPEM: altChain, Alternates: others}, nil
		}
	}
	return issuance.Certificate{ChainPEM: chain, Alternates: alts}, nil
}

// Revoke revokes cert (DER), signed by the account (its kid), with an RFC
// 5280 reason code (0-10 but 7).
func (c *Client) Revoke(ctx context.Context, acct issuance.Account, cert []byte, reason int) error {
	if len(cert) == 0 {
		return &acmeacct.Problem{Type: problemMalformed, Detail: "no certificate to revoke"}
	}
	if reason < 0 || reason > 10 || reason == 7 {
		return &acmeacct.Problem{Type: problemBadRevocationReason, Detail: fmt.Sprintf("revocation reason %d is not an RFC 5280 reason code", reason)}
	}
	cl, err := c.begin(ctx, acct, "revoke")
	if err != nil {
		return err
	}
	defer cl.end()
	r := uint(reason)
	err = cl.core.Certificates.Revoke(legoacme.RevokeCertMessage{
		Certificate: base64.RawURLEncoding.EncodeToString(cert),
		Reason:      &r,
	})
	if err != nil {
		return cl.fail(err)
	}
	return nil
}

// call is one port call holding a Core.
type call struct {
	c      *Client
	op     string
	ctx    context.Context
	cancel context.CancelFunc
	key    coreKey
	pc     *pooledCore
	core   *api.Core
	tr     *callTransport
}

// begin checks the account, bounds ctx by Config.Timeout and borrows a
// Core for the account, making one if none is idle.
func (c *Client) begin(ctx context.Context, acct issuance.Account, op string) (*call, error) {
	if err := checkDirectoryURL(acct.DirectoryURL); err != nil {
		return nil, err
	}
	if err := checkURL(acct.URL, "account"); err != nil {
		return nil, err
	}
	key, err := accountKey(acct.Key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("acme: %s: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	k := coreKey{dir: acct.DirectoryURL, kid: acct.URL}
	pc := c.cores.take(k, key, time.Now())
	if pc == nil {
		pc, err = c.newCore(ctx, k, key)
		if err != nil {
			cancel()
			return nil, classify(ctx, op, err)
		}
	}
	pc.tr.ctx = ctx
	return &call{c: c, op: op, ctx: ctx, cancel: cancel, key: k, pc: pc, core: pc.core, tr: pc.tr}, nil
}

// end closes the call's response bodies and gives the Core back.
func (cl *call) end() {
	cl.tr.reset()
	cl.c.cores.give(cl.key, cl.pc, time.Now())
	cl.cancel()
}

// fail classifies an error of the call: classify's rules, and a 4xx answer
// that carried no problem document is a problem of type about:blank.
func (cl *call) fail(err error) error {
	out := classify(cl.ctx, cl.op, err)
	var prob *acmeacct.Problem
	if errors.As(out, &prob) || cl.ctx.Err() != nil {
		return out
	}
	var details *legoacme.ProblemDetails
	last := cl.tr.last
	if errors.As(err, &details) || last == nil {
		return out
	}
	if st := last.StatusCode; st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests {
		return &acmeacct.Problem{
			Type:   problemBlank,
			Detail: fmt.Sprintf("%s %s: %s without a problem document", last.Request.Method, last.Request.URL, last.Status),
			Status: st,
		}
	}
	return out
}

func (cl *call) retryAfter() time.Duration {
	if cl.tr.last == nil {
		return 0
	}
	return parseRetryAfter(cl.tr.last.Header.Get("Retry-After"), time.Now())
}

func (cl *call) order(o legoacme.Order, orderURL string) issuance.Order {
	out := issuance.Order{
		URL:            orderURL,
		Status:         o.Status,
		Authorizations: o.Authorizations,
		FinalizeURL:    o.Finalize,
		CertificateURL: o.Certificate,
		RetryAfter:     cl.retryAfter(),
	}
	if o.Expires != "" {
		if t, err := time.Parse(time.RFC3339, o.Expires); err == nil {
			out.Expires = t
		}
	}
	if o.Error != nil {
		out.Error = problemOf(o.Error)
	}
	return out
}

func challengeOf(ch legoacme.Challenge) issuance.Challenge {
	out := issuance.Challenge{Type: ch.Type, URL: ch.URL, Token: ch.Token, Status: ch.Status}
	if ch.Error != nil {
		out.Error = problemOf(ch.Error)
	}
	return out
}

// coreKey names an account at a CA.
type coreKey struct{ dir, kid string }

// coreCache holds the idle Cores of each account and the directory of
// each CA. The zero value is ready.
type coreCache struct {
	mu        sync.Mutex
	dirs      map[string]*dirEntry
	idle      map[coreKey][]*pooledCore
	lastSweep time.Time
}

// dirEntry is lego's directory of one CA, as JSON, nil until fetched.
type dirEntry struct {
	mu  sync.Mutex
	raw []byte
}

type pooledCore struct {
	core  *api.Core
	tr    *callTransport
	key   crypto.PrivateKey
	since time.Time // idle since
}

// take pops the most recently used idle Core of k that signs with key.
func (cc *coreCache) take(k coreKey, key crypto.PrivateKey, now time.Time) *pooledCore {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if now.Sub(cc.lastSweep) > coreIdleTTL {
		cc.lastSweep = now
		for ik, list := range cc.idle {
			kept := list[:0]
			for _, pc := range list {
				if now.Sub(pc.since) <= coreIdleTTL {
					kept = append(kept, pc)
				}
			}
			clear(list[len(kept):])
			if len(kept) == 0 {
				delete(cc.idle, ik)
			} else {
				cc.idle[ik] = kept
			}
		}
	}
	list := cc.idle[k]
	for len(list) > 0 {
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if now.Sub(pc.since) <= coreIdleTTL && sameKey(pc.key, key) {
			cc.idle[k] = list
			return pc
		}
	}
	delete(cc.idle, k)
	return nil
}

// give puts a Core back, dropping it when the account has enough.
func (cc *coreCache) give(k coreKey, pc *pooledCore, now time.Time) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.idle == nil {
		cc.idle = map[coreKey][]*pooledCore{}
	}
	if len(cc.idle[k]) >= maxIdleCores {
		return
	}
	pc.since = now
	cc.idle[k] = append(cc.idle[k], pc)
}

func (cc *coreCache) dir(url string) *dirEntry {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dirs == nil {
		cc.dirs = map[string]*dirEntry{}
	}
	e := cc.dirs[url]
	if e == nil {
		e = &dirEntry{}
		cc.dirs[url] = e
	}
	return e
}

// newCore makes a Core for k. The first one for a directory fetches it
// (one caller at a time, so concurrent first calls fetch it once); the
// later ones are given the cached copy without a request.
func (c *Client) newCore(ctx context.Context, k coreKey, key crypto.PrivateKey) (*pooledCore, error) {
	e := c.cores.dir(k.dir)
	e.mu.Lock()
	raw := e.raw
	if raw != nil {
		e.mu.Unlock()
	} else {
		defer e.mu.Unlock()
	}
	tr := &callTransport{base: c.transport, ctx: ctx, dir: raw}
	core, err := api.New(&http.Client{Transport: tr}, c.userAgent, k.dir, k.kid, key)
	tr.reset()
	tr.dir = nil
	if err != nil {
		return nil, err
	}
	if raw == nil {
		raw, err = json.Marshal(core.GetDirectory())
		if err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		e.raw = raw
	}
	return &pooledCore{core: core, tr: tr, key: key}, nil
}

// callTransport is the transport of one Core. The Core is used by one
// call at a time, and net/http calls RoundTrip on the caller's goroutine,
// so its fields need no lock.
type callTransport struct {
	base http.RoundTripper
	// ctx bounds every request of the current call.
	ctx context.Context
	// dir, while the Core is being made, is the directory to answer its
	// GET with instead of asking the CA.
	dir []byte
	// last is the response to the call's last POST; nil when that POST
	// got no answer.
	last *http.Response
	// capture keeps the body of each POST answer in body.
	capture bool
	body    bytes.Buffer
	// stopReplaced (with capture) answers a POST that follows an
	// alreadyReplaced refusal of the same URL with that refusal again,
	// without sending it: lego's OrderService.NewWithOptions retries such
	// an order at once without "replaces", which the port leaves to the
	// step machine. The replayed answer carries the refusal's
	// Replay-Nonce, which lego had taken for the request that never left,
	// so the nonce is not lost.
	stopReplaced bool
	open         []io.Closer
}

func (t *callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.dir != nil && req.Method == http.MethodGet {
		return &http.Response{
			Status:        "200 OK",
			StatusCode:    http.StatusOK,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"application/json"}},
			Body:          io.NopCloser(bytes.NewReader(t.dir)),
			ContentLength: int64(len(t.dir)),
			Request:       req,
		}, nil
	}
	ctx := t.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	post := req.Method == http.MethodPost
	var resp *http.Response
	if post && t.stopReplaced {
		if resp = t.replayAlreadyReplaced(req); resp != nil && req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body it does not send
		}
	}
	if post {
		t.last = nil
	}
	if resp == nil {
		var err error
		resp, err = t.base.RoundTrip(req.WithContext(ctx))
		if err != nil {
			return nil, err
		}
	}
	if post {
		t.last = resp
		if t.capture {
			t.body.Reset()
			resp.Body = teeBody{Reader: io.TeeReader(resp.Body, limitWriter{&t.body, maxCapturedBody}), Closer: resp.Body}
		}
	}
	t.open = append(t.open, resp.Body)
	return resp, nil
}

// replayAlreadyReplaced returns a copy of the call's last answer when it
// was a 409 alreadyReplaced problem to a POST of req's URL, else nil.
func (t *callTransport) replayAlreadyReplaced(req *http.Request) *http.Response {
	last := t.last
	if last == nil || last.StatusCode != http.StatusConflict || last.Request == nil || last.Request.URL.String() != req.URL.String() {
		return nil
	}
	var prob struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(t.body.Bytes(), &prob) != nil || prob.Type != issuance.ProblemAlreadyReplaced {
		return nil
	}
	body := bytes.Clone(t.body.Bytes())
	return &http.Response{
		Status:        last.Status,
		StatusCode:    last.StatusCode,
		Proto:         last.Proto,
		ProtoMajor:    last.ProtoMajor,
		ProtoMinor:    last.ProtoMinor,
		Header:        last.Header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// reset closes what lego left open and forgets the call.
func (t *callTransport) reset() {
	for _, b := range t.open {
		_ = b.Close()
	}
	clear(t.open)
	t.open = t.open[:0]
	t.ctx = nil
	t.last = nil
	t.capture = false
	t.stopReplaced = false
	t.body.Reset()
}

type teeBody struct {
	io.Reader
	io.Closer
}

type limitWriter struct {
	buf *bytes.Buffer
	max int
}

func (w limitWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func sameKey(a, b crypto.PrivateKey) bool {
	k, ok := a.(interface{ Equal(crypto.PrivateKey) bool })
	return ok && k.Equal(b)
}

// checkURL refuses, as a problem no retry fixes, a URL lego would refuse.
func checkURL(s, what string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return &acmeacct.Problem{Type: problemMalformed, Detail: fmt.Sprintf("%s URL %q is not an https URL", what, s)}
	}
	return nil
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP
// date; anything else, and a time already past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(365*24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// alternates returns the Link rel="alternate" targets of resp, resolved
// against base.
func alternates(resp *http.Response, base string) []string {
	if resp == nil {
		return nil
	}
	b, err := url.Parse(base)
	if err != nil {
		return nil
	}
	var out []string
	for _, h := range resp.Header.Values("Link") {
		for _, l := range parseLinks(h) {
			if !l.has("alternate") {
				continue
			}
			if u, err := b.Parse(l.target); err == nil {
				out = append(out, u.String())
			}
		}
	}
	return out
}

type link struct {
	target string
	rels   []string
}

func (l link) has(rel string) bool {
	for _, r := range l.rels {
		if strings.EqualFold(r, rel) {
			return true
		}
	}
	return false
}

// parseLinks parses one Link header value (RFC 8288): comma-separated
// <target>; param=value... entries, values quoted or not.
func parseLinks(h string) []link {
	var out []link
	for {
		start := strings.IndexByte(h, '<')
		if start < 0 {
			return out
		}
		end := strings.IndexByte(h[start:], '>')
		if end < 0 {
			return out
		}
		l := link{target: h[start+1 : start+end]}
		h = h[start+end+1:]
		// Parameters up to the comma that ends the entry, minding quotes.
		for {
			h = strings.TrimLeft(h, " \t")
			if h == "" || h[0] != ';' {
				break
			}
			h = strings.TrimLeft(h[1:], " \t")
			eq := strings.IndexAny(h, "=;,")
			if eq < 0 || h[eq] != '=' {
				if eq < 0 {
					h = ""
				} else {
					h = h[eq:]
				}
				continue
			}
			name := strings.ToLower(strings.TrimSpace(h[:eq]))
			h = strings.TrimLeft(h[eq+1:], " \t")
			var value string
			if strings.HasPrefix(h, `"`) {
				var b strings.Builder
				i := 1
				for ; i < len(h) && h[i] != '"'; i++ {
					if h[i] == '\\' && i+1 < len(h) {
						i++
					}
					b.WriteByte(h[i])
				}
				value = b.String()
				h = h[min(i+1, len(h)):]
			} else {
				i := strings.IndexAny(h, ";,")
				if i < 0 {
					i = len(h)
				}
				value = strings.TrimSpace(h[:i])
				h = h[i:]
			}
			if name == "rel" {
				l.rels = append(l.rels, strings.Fields(value)...)
			}
		}
		out = append(out, l)
	}
}

// topIssuerCN is the issuer CN of the last certificate of a PEM chain.
func topIssuerCN(chain []byte) string {
	var last []byte
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			last = b.Bytes
		}
	}
	if last == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(last)
	if err != nil {
		return ""
	}
	return cert.Issuer.CommonName
}

// thumbprint is the base64url SHA-256 JWK thumbprint of pub (RFC 7638):
// the hash of the key's required members, in lexical order, without
// whitespace.
func thumbprint(pub crypto.PublicKey) (string, error) {
	enc := base64.RawURLEncoding.EncodeToString
	var jwk string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || X || Y, each padded to the field size
		if err != nil || len(point) < 3 {
			return "", &acmeacct.Problem{Type: problemBadPublicKey, Detail: fmt.Sprintf("ECDSA account key: %v", err)}
		}
		n := (len(point) - 1) / 2
		jwk = `{"crv":"` + k.Curve.Params().Name + `","kty":"EC","x":"` + enc(point[1:1+n]) + `","y":"` + enc(point[1+n:]) + `"}`
	case *rsa.PublicKey:
		jwk = `{"e":"` + enc(big.NewInt(int64(k.E)).Bytes()) + `","kty":"RSA","n":"` + enc(k.N.Bytes()) + `"}`
	default:
		return "", &acmeacct.Problem{Type: problemBadPublicKey, Detail: fmt.Sprintf("account key of type %T", pub)}
	}
	sum := sha256.Sum256([]byte(jwk))
	return enc(sum[:]), nil
}
