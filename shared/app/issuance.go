package app

import (
	"context"
	"net/http"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/issuance"
)

// issuanceAccounts gives the step machine the ACME accounts it signs as.
type issuanceAccounts struct{ s *acmeacct.Service }

func (a issuanceAccounts) Account(ctx context.Context, userID, acctID int64) (issuance.Account, error) {
	dir, url, key, err := a.s.Signer(ctx, userID, acctID)
	if err != nil {
		return issuance.Account{}, err
	}
	return issuance.AccountFrom(dir, url, key)
}

// issuanceCerts gives the step machine the certificate records it issues.
type issuanceCerts struct{ s *certs.Service }

func (c issuanceCerts) Spec(ctx context.Context, userID, certID int64) (issuance.CertSpec, error) {
	cert, err := c.s.Get(ctx, userID, certID)
	if err != nil {
		return issuance.CertSpec{}, err
	}
	return issuance.CertSpec{Names: cert.SANs, KeyAlgorithm: cert.KeyAlgorithm, KeySize: cert.KeySize,
		AcctID: cert.AcctID, ValidationMethod: cert.Validation.Method, DNSProviderID: cert.Validation.DNSProviderID,
		ServerDecryptExport: cert.ServerDecryptExport, IssueID: cert.IssueID}, nil
}

func (c issuanceCerts) RecordIssued(ctx context.Context, userID, certID int64, is issuance.Issued) error {
	return c.s.RecordIssued(ctx, userID, certID, is.IssueID, is.NotAfter, is.RenewAt)
}

func (c issuanceCerts) RecordRevoked(ctx context.Context, userID, certID int64) error {
	return c.s.RecordRevoked(ctx, userID, certID)
}

// wireIssuance builds the step machine and registers its steps.
func (a *App) wireIssuance() {
	a.Issuance = issuance.New(a.Store, a.Sealer, a.Queue, a.ca, issuanceAccounts{a.ACME}, issuanceCerts{a.Certs},
		issuance.Config{MaxAttempts: a.Config.QueueMaxReceives, MaxInFlightPerCA: a.Config.CAMaxInFlight, Log: a.Log})
	for _, k := range issuance.Kinds {
		a.Steps.Register(k, a.Issuance.Step)
	}
}

// issuesGroup is the issue routes with the worker's internal routes.
func (a *App) issuesGroup() httpapi.Group {
	g := certctrl.IssuesGroup(a.Issuance, a.Guard)
	g.Routes = append(g.Routes, certctrl.WorkerRoutes(a.Issuance, a.Guard)...)
	return g
}
func (a *App) challengeGroup() httpapi.Group { return httpapi.ChallengeGroup(a.Issuance) }

// IssuesHandler serves the certificate issue routes (their Lambda).
func (a *App) IssuesHandler() http.Handler { return a.handler(a.issuesGroup()) }

// ChallengeHandler serves HTTP-01 challenge answers to CAs (its Lambda).
func (a *App) ChallengeHandler() http.Handler { return a.handler(a.challengeGroup()) }
