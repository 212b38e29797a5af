package issuance

// The challenge side of the step machine: a Solver per validation method
// makes a challenge's answer visible where the CA looks for it.

import (
	"context"
	"errors"
	"fmt"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Validation methods (as package certs spells them).
const (
	MethodHTTP01          = "http-01"
	MethodDNS01Provider   = "dns-01-provider"
	MethodDNS01Delegation = "dns-01-delegation"
	MethodTLSALPN01       = "tls-alpn-01"
)

// ChallengeType is the ACME challenge type a validation method answers.
func ChallengeType(method string) string {
	switch method {
	case MethodDNS01Provider, MethodDNS01Delegation:
		return "dns-01"
	case MethodTLSALPN01:
		return "tls-alpn-01"
	}
	return "http-01"
}

// Presentation is one challenge answer to make visible.
type Presentation struct {
	UserID, CertID, IssueID int64
	// Method is the certificate's validation method.
	Method string
	// Domain is the identifier without its "*." (a wildcard and its apex
	// share Domain, and so the DNS-01 record name).
	Domain   string
	Wildcard bool
	// Token is the challenge token; KeyAuth its key authorization (RFC
	// 8555 §8.1). DNS-01 publishes base64url(SHA-256(KeyAuth)).
	Token, KeyAuth string
	// DNSProviderID is the user's stored DNS provider credentials that
	// dns-01-provider writes with; 0 otherwise.
	DNSProviderID int64
}

// Solver answers the challenges of one validation method.
//
// Present makes the answer visible; presenting the same answer twice is
// harmless. Ready reports whether the answer can be seen by the CA yet
// (DNS propagation); a solver whose answers are visible at once returns
// true. CleanUp removes the answer; removing one that is gone is no error.
//
// Errors: an apperr Invalid, Conflict or NotFound is a problem of the
// user's setup that no retry fixes (a missing CNAME, refused credentials,
// an unknown provider) and fails the issue with its message; any other
// error is transient and retried.
type Solver interface {
	Present(ctx context.Context, p Presentation) error
	Ready(ctx context.Context, p Presentation) (bool, error)
	CleanUp(ctx context.Context, p Presentation) error
}

// DNSCredentials opens a user's stored DNS provider credentials, for the
// dns-01-provider solver (package dnsprov's Service).
type DNSCredentials interface {
	// Open returns the lego provider code (e.g. "cloudflare") and its
	// settings by lego environment variable name. Errors: an apperr
	// NotFound for another user's or a missing provider; others transient.
	Open(ctx context.Context, userID, providerID int64) (provider string, settings map[string]string, err error)
}

// answer is one challenge answer an issue presented.
type answer struct {
	Domain       string `json:"domain"`
	Wildcard     bool   `json:"wildcard,omitempty"`
	Token        string `json:"token"`
	KeyAuth      string `json:"key_auth"`
	ChallengeURL string `json:"challenge_url"`
	// AuthzURL is the authorization the challenge belongs to.
	AuthzURL string `json:"authz_url"`
	// Accepted is set once the CA was asked to validate it.
	Accepted bool `json:"accepted,omitempty"`
}

func (s *Service) presentation(rec issueRecord, a answer) Presentation {
	return Presentation{UserID: rec.UserID, CertID: rec.CertID, IssueID: rec.ID, Method: rec.Method,
		Domain: a.Domain, Wildcard: a.Wildcard, Token: a.Token, KeyAuth: a.KeyAuth, DNSProviderID: rec.DNSProviderID}
}

// solver returns the solver of the issue's method. Errors: Invalid when
// this server does not answer the method.
func (s *Service) solver(method string) (Solver, error) {
	if sv, ok := s.solvers[method]; ok {
		return sv, nil
	}
	return nil, apperr.New(apperr.Invalid, "this server does not answer %s challenges (its worker has no %s solver)", method, method)
}

// httpSolver serves HTTP-01 answers from the store, by token, through the
// challenge responder (ChallengeGroup); they expire after ChallengeTTL.
type httpSolver struct{ s *Service }

func (h httpSolver) Present(ctx context.Context, p Presentation) error {
	it := store.Item{Key: tokenKey(p.Token), Value: []byte(p.KeyAuth), ExpiresAt: h.s.now().Add(h.s.cfg.ChallengeTTL)}
	if _, err := h.s.st.Put(ctx, it, store.Always); err != nil {
		return fmt.Errorf("store http-01 answer: %w", err)
	}
	return nil
}

func (httpSolver) Ready(context.Context, Presentation) (bool, error) { return true, nil }

func (h httpSolver) CleanUp(ctx context.Context, p Presentation) error {
	return h.s.st.Delete(ctx, tokenKey(p.Token), store.Always)
}

// tlsALPNSolver serves TLS-ALPN-01 answers from the store, by name,
// through the TLS-ALPN-01 responder (package tlsalpn).
type tlsALPNSolver struct{ s *Service }

func (t tlsALPNSolver) Present(ctx context.Context, p Presentation) error {
	it := store.Item{Key: tlsALPNKey(p.Domain), Value: []byte(p.KeyAuth), ExpiresAt: t.s.now().Add(t.s.cfg.ChallengeTTL)}
	if _, err := t.s.st.Put(ctx, it, store.Always); err != nil {
		return fmt.Errorf("store tls-alpn-01 answer: %w", err)
	}
	return nil
}

func (tlsALPNSolver) Ready(context.Context, Presentation) (bool, error) { return true, nil }

// CleanUp removes the name's answer only while it is still this one: a
// later issue for the same name may have replaced it.
func (t tlsALPNSolver) CleanUp(ctx context.Context, p Presentation) error {
	it, err := t.s.st.Get(ctx, tlsALPNKey(p.Domain))
	if errors.Is(err, store.ErrNotFound) || (err == nil && string(it.Value) != p.KeyAuth) {
		return nil
	}
	if err != nil {
		return err
	}
	err = t.s.st.Delete(ctx, it.Key, store.IfVersion(it.Version))
	if errors.Is(err, store.ErrConditionFailed) {
		return nil
	}
	return err
}
