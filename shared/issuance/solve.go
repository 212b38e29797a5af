package issuance

// The challenge side of the step machine: a Solver per validation method
// makes a challenge's answer visible where the CA looks for it.

import (
	"context"
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
