package app

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/issuance/records"
	"github.com/certfleet/certfleet/shared/renewal"
)

// wireIssuance builds the step machine and registers its steps and the
// renewal check. Let's Encrypt's weekly limits bound the letsencrypt
// provider (renewal.Budget).
func (a *App) wireIssuance(o options) error {
	budget, err := renewal.NewBudget(a.Store, renewal.BudgetConfig{})
	if err != nil {
		return err
	}
	var solvers map[string]issuance.Solver
	if o.dns != nil {
		if solvers, err = o.dns(a.Config.DelegationZone, a.Config.DelegationProvider, a.Config.DNSResolvers, a.DNSProviders); err != nil {
			return fmt.Errorf("app: DNS-01: %w", err)
		}
	}
	a.Issuance = issuance.New(a.Store, a.Sealer, a.Queue, a.ca, records.Accounts{ACME: a.ACME}, records.Certs{Certs: a.Certs, ACME: a.ACME},
		issuance.Config{MaxAttempts: a.Config.QueueMaxReceives, MaxInFlightPerCA: a.Config.CAMaxInFlight, Log: a.Log,
			Budgets: map[string]*renewal.Budget{"letsencrypt": budget}, Solvers: solvers, OnIssued: a.RewrapOnIssued(a.Stream)})
	for _, k := range issuance.Kinds {
		a.Steps.Register(k, a.Issuance.Step)
	}
	a.Steps.Register(issuance.KindRenewalCheck, a.Issuance.RenewalCheck)
	return nil
}

// RenewalScanLimit is how many due certificates one renewal scan queues
// checks for; the rest wait for the next scan.
const RenewalScanLimit = 500

// ScanRenewals queues a renewal check for every certificate whose check
// is due (the renewal scheduler: a local job, an EventBridge schedule in
// the cloud).
func (a *App) ScanRenewals(ctx context.Context) error {
	n, err := renewal.Scan(ctx, a.Certs, renewalChecks{a.Issuance}, time.Now(), RenewalScanLimit)
	if n > 0 {
		a.Log.Info("renewal checks queued", "count", n)
	}
	return err
}

// renewalChecks starts a renewal by queueing its check.
type renewalChecks struct{ s *issuance.Service }

func (r renewalChecks) Renew(ctx context.Context, userID, certID int64) error {
	return r.s.QueueRenewalCheck(ctx, userID, certID)
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
