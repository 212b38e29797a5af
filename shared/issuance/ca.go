// Package issuance is the issuance step machine (design.md, "Issuance: a
// step machine over a queue"). This file is its port to ACME CAs: one call
// per protocol exchange, so every step of the machine is one short,
// idempotent message. Package acme implements it with lego's low-level
// acme/api.
package issuance

import (
	"context"
	"crypto"
	"errors"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
)

// Account is a registered ACME account: where and who.
type Account struct {
	DirectoryURL string
	// URL is the account URL (the JWS "kid").
	URL string
	Key crypto.Signer
}

// OrderRequest asks for a certificate.
type OrderRequest struct {
	// Names are DNS identifiers, wildcards included ("*.example.com").
	Names []string
	// Profile names a profile of the CA's directory meta, or "".
	Profile string
	// Replaces is the ARI certificate id (ARICertID) of the certificate
	// this order renews, or "". It is sent only to a CA whose directory
	// has renewalInfo; others never see it. A CA that already has a
	// replacement for that certificate refuses the order with a Problem
	// of type ProblemAlreadyReplaced (see ACME.NewOrder).
	Replaces string
}

// Order is an ACME order as last read.
type Order struct {
	URL            string
	Status         string // pending, ready, processing, valid, invalid
	Expires        time.Time
	Authorizations []string
	FinalizeURL    string
	CertificateURL string
	// RetryAfter is the CA's Retry-After on this response, or 0.
	RetryAfter time.Duration
	// Error is the order's problem when it is invalid.
	Error *acmeacct.Problem
}

// Authorization is an ACME authorization as last read.
type Authorization struct {
	URL        string
	Status     string // pending, valid, invalid, deactivated, expired, revoked
	Identifier string
	Wildcard   bool
	Challenges []Challenge
	RetryAfter time.Duration
}

// Challenge is one way to prove control of an identifier.
type Challenge struct {
	Type   string // http-01, dns-01, tls-alpn-01
	URL    string
	Token  string
	Status string
	Error  *acmeacct.Problem
}

// Certificate is a downloaded certificate chain.
type Certificate struct {
	// ChainPEM is the leaf followed by its issuers, as the CA served it.
	ChainPEM []byte
	// Alternates are the URLs of the other chains the CA offers.
	Alternates []string
}

// ProblemAlreadyReplaced is the problem type (RFC 9773 §7.4) of a new
// order whose Replaces names a certificate the CA has already seen
// replaced by another order that was not invalid.
const ProblemAlreadyReplaced = "urn:ietf:params:acme:error:alreadyReplaced"

// ErrNoRenewalInfo is returned by ACME.RenewalInfo when the CA's
// directory has no renewalInfo resource: the CA offers no ARI, and
// renewal is planned without a window (2/3 of the lifetime). It is
// neither a refusal nor worth a retry.
var ErrNoRenewalInfo = errors.New("issuance: the CA offers no renewal information (no renewalInfo in its directory)")

// RenewalInfo is a CA's renewal information for one certificate (ACME
// Renewal Information, RFC 9773 §4.2).
type RenewalInfo struct {
	// Start and End bound the suggested renewal window; Start is before
	// End. A window already past means "renew now" (for instance after a
	// revocation was announced).
	Start, End time.Time
	// ExplanationURL is a page telling people why the window is what it
	// is, or "". Show it to the certificate's owner when set.
	ExplanationURL string
	// RetryAfter is when to ask again, from the answer's Retry-After, or
	// 0 when the CA sent none.
	RetryAfter time.Duration
}

// ACME is the CA port of the step machine. Every method is one exchange
// (plus a nonce when needed). A refusal by the CA is a *acmeacct.Problem;
// other errors are transient and worth a retry.
type ACME interface {
	// NewOrder creates an order. An order whose req.Replaces names a
	// certificate that already has a replacement is refused with a
	// *acmeacct.Problem of Type ProblemAlreadyReplaced (HTTP 409); it is
	// not sent again by the port: the step machine orders again without
	// Replaces.
	NewOrder(ctx context.Context, acct Account, req OrderRequest) (Order, error)
	GetOrder(ctx context.Context, acct Account, orderURL string) (Order, error)
	GetAuthorization(ctx context.Context, acct Account, authzURL string) (Authorization, error)
	// AcceptChallenge tells the CA to validate the challenge now.
	AcceptChallenge(ctx context.Context, acct Account, challengeURL string) (Challenge, error)
	// KeyAuthorization is the token's key authorization (RFC 8555 §8.1);
	// DNS-01 publishes its SHA-256 in base64url, HTTP-01 serves it as is.
	KeyAuthorization(acct Account, token string) (string, error)
	// Finalize submits the CSR (DER) of a ready order.
	Finalize(ctx context.Context, acct Account, finalizeURL string, csr []byte) (Order, error)
	// Download fetches the certificate; preferredChain, when not "",
	// selects the alternate chain whose top issuer has that common name.
	Download(ctx context.Context, acct Account, certURL, preferredChain string) (Certificate, error)
	// Revoke revokes a certificate (DER) with an RFC 5280 reason code.
	Revoke(ctx context.Context, acct Account, cert []byte, reason int) error
	// RenewalInfo fetches the CA's renewal information (RFC 9773) for the
	// certificate leaf (DER), identified to the CA by ARICertID (leaf's
	// Authority Key Identifier and serial; no issuer is needed). It is an
	// unauthenticated GET, but acct names the CA (its DirectoryURL) and
	// lends the call a connection like every other method. Errors:
	// ErrNoRenewalInfo when the directory has no renewalInfo; a
	// *acmeacct.Problem for a leaf without an Authority Key Identifier
	// or that cannot be parsed (Status 0) and for a refusal by the CA
	// (e.g. 404 for a certificate it does not know); a plain error,
	// worth a retry, for anything else, including an answer that is no
	// valid RenewalInfo (RFC 9773 §4.2: treat it as no answer).
	RenewalInfo(ctx context.Context, acct Account, leafDER []byte) (RenewalInfo, error)
}
