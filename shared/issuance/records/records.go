// Package records connects the issuance step machine to the record
// services it issues for: certificates (package certs) and ACME accounts
// (package acmeacct). Both shapes (shared/app) and the tests that run the
// machine over real services use it.
package records

import (
	"context"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/issuance"
)

// Accounts gives the step machine the registered ACME accounts it signs
// as.
type Accounts struct{ ACME *acmeacct.Service }

var _ issuance.AccountSource = Accounts{}

// Account opens the account's key and names its CA.
func (a Accounts) Account(ctx context.Context, userID, acctID int64) (issuance.Account, error) {
	dir, url, key, err := a.ACME.Signer(ctx, userID, acctID)
	if err != nil {
		return issuance.Account{}, err
	}
	return issuance.AccountFrom(dir, url, key)
}

// Certs gives the step machine the certificate records it issues.
type Certs struct {
	Certs *certs.Service
	ACME  *acmeacct.Service
}

var _ issuance.CertSource = Certs{}

// Spec reads what an issue copies from the certificate.
func (c Certs) Spec(ctx context.Context, userID, certID int64) (issuance.CertSpec, error) {
	cert, err := c.Certs.Get(ctx, userID, certID)
	if err != nil {
		return issuance.CertSpec{}, err
	}
	spec := issuance.CertSpec{Names: cert.SANs, KeyAlgorithm: cert.KeyAlgorithm, KeySize: cert.KeySize,
		AcctID: cert.AcctID, ValidationMethod: cert.Validation.Method, DNSProviderID: cert.Validation.DNSProviderID,
		ServerDecryptExport: cert.ServerDecryptExport, IssueID: cert.IssueID, Revoked: cert.Status == certs.StatusRevoked}
	// The provider picks the weekly budget; an account that is gone
	// leaves it empty, and the issue then fails on the account.
	if acct, err := c.ACME.Get(ctx, userID, cert.AcctID); err == nil {
		spec.Provider = acct.ProviderName
	}
	return spec, nil
}

// RecordIssued records the issued certificate and its renewal plan.
func (c Certs) RecordIssued(ctx context.Context, userID, certID int64, is issuance.Issued) error {
	return c.Certs.RecordIssued(ctx, userID, certID, is.IssueID, is.NotAfter, is.RenewAt, is.CheckAt)
}

// RecordRevoked marks the certificate revoked.
func (c Certs) RecordRevoked(ctx context.Context, userID, certID int64) error {
	return c.Certs.RecordRevoked(ctx, userID, certID)
}

// PlanRenewal records a new renewal plan.
func (c Certs) PlanRenewal(ctx context.Context, userID, certID int64, renewAt, checkAt time.Time) error {
	return c.Certs.PlanRenewal(ctx, userID, certID, renewAt, checkAt)
}
