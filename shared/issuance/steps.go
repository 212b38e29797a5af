package issuance

// The worker side: one handler (Step) for every "issuance.<step>" kind.
//
// Every message carries the issue's Seq at the time it was queued; the
// issue's Seq grows by one on every transition, so a message acts only
// while the issue is exactly where the message left it. A replayed or
// duplicated message finds a newer Seq and does nothing; a poll that
// re-queues itself leaves exactly one live poll message.
//
// A transition that needs no wait runs the next step in the same delivery
// (Config.NoInline turns this off): the issue is stored at the new Seq
// first, so a crash in between leaves a stored state that the next step's
// message would have found. A transition with a wait stores the issue at
// its new Seq first and then queues the next message (never the other way
// round: a message could then arrive before the state it needs). A
// delivery that dies or fails between a store and the next queueing is
// redelivered (Attempt > 1), finds the issue ahead of its Seq and queues
// the issue's current step: a lost hand-off costs one retry, never a
// stuck issue. A replayed first delivery (Attempt 1) never queues.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/renewal"
	"github.com/certfleet/certfleet/shared/store"
)

const (
	problemOrderNotReady = "urn:ietf:params:acme:error:orderNotReady"
	problemRateLimited   = "urn:ietf:params:acme:error:rateLimited"
)

// run is one delivery's view of an issue.
type run struct {
	rec     issueRecord
	it      store.Item
	acct    Account
	hasAcct bool
}

// Step is the worker's handler for every kind in Kinds. A transient
// failure is returned for a retry; a refusal by the CA (*acmeacct.Problem),
// a missing or unusable account or certificate, or a transient failure on
// the last attempt (Config.MaxAttempts) marks the issue failed, deletes its
// HTTP-01 tokens and returns nil.
func (s *Service) Step(ctx context.Context, d queue.Delivery) error {
	m, rec, it, ok, err := s.pendingIssue(ctx, d)
	if !ok {
		return err
	}
	if rec.Seq != m.Seq {
		if d.Attempt > 1 && rec.Seq > m.Seq {
			// A retried delivery whose hand-off was lost: it stored the
			// issue's next state but failed (or died) before queueing the
			// next message. Queue it now.
			return s.send(ctx, rec, 0)
		}
		return nil // past it (a replay, a duplicate, a stale poll)
	}
	if d.Kind != KindPrefix+rec.Step {
		return nil
	}
	r := &run{rec: rec, it: it}
	if rec.Step == StepOrder {
		// Creating an order is the one step a CA does not deduplicate:
		// claim it first, so concurrent copies of the message make one.
		if err := s.claimOrder(ctx, r); err != nil {
			return err
		}
	}
	for first := true; ; first = false {
		next, delay, err := s.do(ctx, r)
		if err != nil {
			var prob *acmeacct.Problem
			code := apperr.CodeOf(err)
			switch {
			case errors.As(err, &prob):
				return s.fail(ctx, r, fmt.Sprintf("%s: the CA refused: %s", r.rec.Step, prob.Error()))
			case code == apperr.NotFound || code == apperr.Conflict || code == apperr.Invalid:
				return s.fail(ctx, r, fmt.Sprintf("%s: %s", r.rec.Step, apperr.MessageOf(err)))
			case first && d.Attempt >= s.cfg.MaxAttempts:
				return s.fail(ctx, r, fmt.Sprintf("%s: gave up after %d attempts: %v", r.rec.Step, d.Attempt, err))
			case first:
				return fmt.Errorf("issuance: issue %d: %s: %w", r.rec.ID, r.rec.Step, err)
			}
			// An inline step failed: its own message retries it.
			s.log.Warn("issuance: step failed; queued for a retry", "issue", r.rec.ID, "step", r.rec.Step, "err", err)
			return s.send(ctx, r.rec, time.Second)
		}
		r.rec.Step = next
		r.rec.Seq++
		r.rec.UpdatedAt = s.now()
		if next == StepDone {
			return s.persist(ctx, r)
		}
		if delay == 0 && !s.cfg.NoInline {
			if err := s.persist(ctx, r); err != nil {
				if errors.Is(err, store.ErrConditionFailed) {
					return nil
				}
				return err
			}
			continue
		}
		if err := s.persist(ctx, r); err != nil {
			if errors.Is(err, store.ErrConditionFailed) {
				return nil
			}
			return err
		}
		// A failure here is retried, and the retry queues the message
		// (see above).
		return s.send(ctx, r.rec, delay)
	}
}

// orderClaimTTL is how long a claim on the order step keeps other
// deliveries out; then the claimant is taken for dead.
const orderClaimTTL = 2 * time.Minute

// errOrderClaimed answers a delivery that finds another one creating the
// issue's order: retried later, it finds the issue past the order step.
var errOrderClaimed = errors.New("issuance: another delivery is creating this issue's order")

// claimOrder records that this delivery creates the issue's order (a
// conditional write: of concurrent deliveries one wins). A fresh claim by
// another delivery, or a lost race, is errOrderClaimed.
func (s *Service) claimOrder(ctx context.Context, r *run) error {
	now := s.now()
	if !r.rec.OrderClaimedAt.IsZero() && now.Sub(r.rec.OrderClaimedAt) < orderClaimTTL {
		return errOrderClaimed
	}
	r.rec.OrderClaimedAt = now
	if err := s.persist(ctx, r); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return errOrderClaimed
		}
		return err
	}
	return nil
}

// pendingIssue reads the issue a step message is about; ok is false
// (with a nil error) when there is nothing to do: a malformed message
// (logged and dropped), an issue gone or no longer pending.
func (s *Service) pendingIssue(ctx context.Context, d queue.Delivery) (message, issueRecord, store.Item, bool, error) {
	var m message
	if err := json.Unmarshal(d.Body, &m); err != nil || m.UserID <= 0 || m.CertID <= 0 || m.IssueID <= 0 {
		s.log.Error("issuance: malformed step message; dropped", "id", d.ID, "kind", d.Kind)
		return m, issueRecord{}, store.Item{}, false, nil
	}
	rec, it, err := s.load(ctx, m.UserID, m.CertID, m.IssueID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return m, rec, it, false, nil
	}
	if err != nil {
		return m, rec, it, false, err
	}
	return m, rec, it, rec.Status == StatusPending, nil
}

// do runs the issue's current step on r.rec (unsaved) and says which step
// comes next, after what wait.
func (s *Service) do(ctx context.Context, r *run) (string, time.Duration, error) {
	switch r.rec.Step {
	case StepOrder:
		return s.order(ctx, r)
	case StepAuthorize:
		return s.authorize(ctx, r)
	case StepCheck:
		return s.check(ctx, r)
	case StepAccept:
		return s.accept(ctx, r)
	case StepPoll:
		return s.poll(ctx, r)
	case StepFinalize:
		return s.finalize(ctx, r)
	case StepDownload:
		return s.download(ctx, r)
	case StepCleanup:
		s.cleanup(ctx, r.rec)
		return StepDone, 0, nil
	}
	return "", 0, apperr.New(apperr.Invalid, "unknown step %q", r.rec.Step)
}

func (s *Service) account(ctx context.Context, r *run) (Account, error) {
	if !r.hasAcct {
		a, err := s.accounts.Account(ctx, r.rec.UserID, r.rec.AcctID)
		if err != nil {
			return Account{}, err
		}
		r.acct, r.hasAcct = a, true
	}
	return r.acct, nil
}

// order creates the ACME order.
func (s *Service) order(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	req := OrderRequest{Names: r.rec.Names}
	if r.rec.Renews != 0 && r.rec.Replaces == "" {
		r.rec.Replaces = s.replaces(ctx, r.rec)
	}
	req.Replaces = r.rec.Replaces
	o, err := s.ca.NewOrder(ctx, acct, req)
	var prob *acmeacct.Problem
	if req.Replaces != "" && errors.As(err, &prob) && prob.Type != problemRateLimited {
		// ARI is advisory: a CA that refuses "replaces" (alreadyReplaced:
		// an earlier issue or another client renewed that certificate;
		// or a CA that fails on it) gets a plain order.
		s.log.Info("issuance: the CA refused replaces; ordering without it", "issue", r.rec.ID, "problem", prob.Type)
		r.rec.Replaces, req.Replaces = "", ""
		o, err = s.ca.NewOrder(ctx, acct, req)
	}
	if err != nil {
		return "", 0, err
	}
	r.rec.OrderURL, r.rec.FinalizeURL, r.rec.Authorizations = o.URL, o.FinalizeURL, o.Authorizations
	return s.afterOrder(ctx, r, o)
}

// replaces is the ARI certificate id of the certificate the issue renews
// (the issue rec.Renews), or "" when it cannot be read: the renewal is
// then ordered as a new certificate.
func (s *Service) replaces(ctx context.Context, rec issueRecord) string {
	prev, _, err := s.load(ctx, rec.UserID, rec.CertID, rec.Renews)
	if err != nil {
		s.log.Warn("issuance: the renewed issue is unreadable; ordering without replaces", "issue", rec.ID, "err", err)
		return ""
	}
	leaf, err := leafOf(prev.ChainPEM)
	if err != nil {
		return ""
	}
	id, err := ARICertID(leaf)
	if err != nil {
		return ""
	}
	return id
}

// leafOf parses the first certificate of a PEM chain.
func leafOf(chainPEM string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(chainPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// afterOrder picks the step an order's status leads to.
func (s *Service) afterOrder(ctx context.Context, r *run, o Order) (string, time.Duration, error) {
	if o.FinalizeURL != "" {
		r.rec.FinalizeURL = o.FinalizeURL
	}
	switch o.Status {
	case "pending":
		if r.rec.Step == StepOrder {
			return StepAuthorize, 0, nil
		}
		return s.wait(r, o.RetryAfter)
	case "ready":
		if r.rec.Finalized {
			return s.wait(r, o.RetryAfter)
		}
		r.rec.Polls = 0
		return StepFinalize, 0, nil
	case "processing":
		r.rec.Finalized = true
		return s.wait(r, o.RetryAfter)
	case "valid":
		r.rec.Finalized = true
		r.rec.CertificateURL = o.CertificateURL
		return StepDownload, 0, nil
	case "invalid":
		return "", 0, s.orderProblem(ctx, r, o)
	}
	return "", 0, fmt.Errorf("order %s: unexpected status %q", o.URL, o.Status)
}

// wait re-queues the poll step after the CA's Retry-After or the backoff.
func (s *Service) wait(r *run, retryAfter time.Duration) (string, time.Duration, error) {
	r.rec.Polls++
	if r.rec.Polls > s.cfg.MaxPolls {
		return "", 0, apperr.New(apperr.Conflict, "the order is still not done after %d polls", s.cfg.MaxPolls)
	}
	d := retryAfter
	if d <= 0 {
		d = s.cfg.PollMin << min(r.rec.Polls-1, 20)
		d = min(d, s.cfg.PollMax)
	}
	return StepPoll, min(d, queue.MaxDelay), nil
}

// orderProblem is the problem of an invalid order: the first invalid
// challenge's error (the CA's detail, e.g. Pebble's key authorization
// mismatch), else the order's own error.
func (s *Service) orderProblem(ctx context.Context, r *run, o Order) error {
	acct, err := s.account(ctx, r)
	if err != nil {
		return err
	}
	for _, az := range r.rec.Authorizations {
		a, err := s.ca.GetAuthorization(ctx, acct, az)
		if err != nil {
			continue
		}
		if p := authzProblem(a); p != nil {
			return p
		}
	}
	if o.Error != nil {
		return o.Error
	}
	return &acmeacct.Problem{Type: "about:blank", Detail: "the CA made the order invalid without a reason"}
}

func authzProblem(a Authorization) *acmeacct.Problem {
	if a.Status == "valid" || a.Status == "pending" {
		return nil
	}
	for _, ch := range a.Challenges {
		if ch.Error != nil {
			return &acmeacct.Problem{Type: ch.Error.Type, Status: ch.Error.Status,
				Detail: fmt.Sprintf("%s (%s, %s)", ch.Error.Detail, a.Identifier, ch.Type)}
		}
	}
	return &acmeacct.Problem{Type: "about:blank", Detail: fmt.Sprintf("authorization for %s is %s", a.Identifier, a.Status)}
}

// authorize reads every authorization that is not valid yet and presents
// an answer to its challenge of the issue's type.
func (s *Service) authorize(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	sv, err := s.solver(r.rec.Method)
	if err != nil {
		return "", 0, err
	}
	typ := ChallengeType(r.rec.Method)
	for _, az := range r.rec.Authorizations {
		a, err := s.ca.GetAuthorization(ctx, acct, az)
		if err != nil {
			return "", 0, err
		}
		switch a.Status {
		case "valid":
			continue // reused by the CA
		case "pending":
		default:
			return "", 0, authzProblem(a)
		}
		i := slices.IndexFunc(a.Challenges, func(ch Challenge) bool { return ch.Type == typ })
		if i < 0 {
			return "", 0, &acmeacct.Problem{Type: "about:blank", Detail: fmt.Sprintf("the CA offers no %s challenge for %s", typ, a.Identifier)}
		}
		ch := a.Challenges[i]
		ka, err := s.ca.KeyAuthorization(acct, ch.Token)
		if err != nil {
			return "", 0, err
		}
		ans := answer{Domain: a.Identifier, Wildcard: a.Wildcard, Token: ch.Token, KeyAuth: ka, ChallengeURL: ch.URL,
			AuthzURL: az, Accepted: ch.Status != "pending"}
		if err := sv.Present(ctx, s.presentation(r.rec, ans)); err != nil {
			return "", 0, fmt.Errorf("present the %s answer for %s: %w", typ, a.Identifier, err)
		}
		if j := slices.IndexFunc(r.rec.Answers, func(x answer) bool { return x.Token == ans.Token }); j >= 0 {
			r.rec.Answers[j] = ans
		} else {
			r.rec.Answers = append(r.rec.Answers, ans)
		}
	}
	r.rec.Checks = 0
	return StepCheck, 0, nil
}

// check looks whether every answer is visible yet, and waits with a
// backoff while one is not.
func (s *Service) check(ctx context.Context, r *run) (string, time.Duration, error) {
	sv, err := s.solver(r.rec.Method)
	if err != nil {
		return "", 0, err
	}
	for _, a := range r.rec.Answers {
		if a.Accepted {
			continue
		}
		ok, err := sv.Ready(ctx, s.presentation(r.rec, a))
		if err != nil {
			return "", 0, fmt.Errorf("check the answer for %s: %w", a.Domain, err)
		}
		if !ok {
			r.rec.Checks++
			if r.rec.Checks > s.cfg.MaxChecks {
				return "", 0, apperr.New(apperr.Conflict, "the %s answer for %s was still not visible after %d checks",
					ChallengeType(r.rec.Method), a.Domain, s.cfg.MaxChecks)
			}
			return StepCheck, min(s.cfg.CheckMin<<min(r.rec.Checks-1, 20), s.cfg.CheckMax), nil
		}
	}
	return StepAccept, 0, nil
}

// accept asks the CA to validate every answer not accepted yet, then
// polls the order.
func (s *Service) accept(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	for i, a := range r.rec.Answers {
		if a.Accepted {
			continue
		}
		if _, err := s.ca.AcceptChallenge(ctx, acct, a.ChallengeURL); err != nil {
			var prob *acmeacct.Problem
			if !errors.As(err, &prob) || !s.acceptedBefore(ctx, acct, a) {
				return "", 0, err
			}
		}
		r.rec.Answers[i].Accepted = true
	}
	r.rec.Polls = 0
	return s.wait(r, 0)
}

// acceptedBefore reports whether the answer's challenge has left pending:
// an earlier delivery accepted it, and the CA refuses a second time.
func (s *Service) acceptedBefore(ctx context.Context, acct Account, a answer) bool {
	az, err := s.ca.GetAuthorization(ctx, acct, a.AuthzURL)
	if err != nil {
		return false
	}
	i := slices.IndexFunc(az.Challenges, func(ch Challenge) bool { return ch.URL == a.ChallengeURL })
	return i >= 0 && az.Challenges[i].Status != "pending"
}

// cleanup removes every presented answer; a failure is logged (HTTP-01
// and TLS-ALPN-01 answers expire anyway).
func (s *Service) cleanup(ctx context.Context, rec issueRecord) {
	sv, err := s.solver(rec.Method)
	if err != nil {
		return
	}
	for _, a := range rec.Answers {
		if err := sv.CleanUp(ctx, s.presentation(rec, a)); err != nil {
			s.log.Warn("issuance: removing a challenge answer failed", "issue", rec.ID, "domain", a.Domain, "err", err)
		}
	}
}

// poll reads the order until it is ready (then finalize) or valid (then
// download).
func (s *Service) poll(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	o, err := s.ca.GetOrder(ctx, acct, r.rec.OrderURL)
	if err != nil {
		return "", 0, err
	}
	return s.afterOrder(ctx, r, o)
}

// finalize makes the certificate key once, stores it sealed, and sends the
// CSR.
func (s *Service) finalize(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	key, err := s.certKey(ctx, r)
	if err != nil {
		return "", 0, err
	}
	tmpl := &x509.CertificateRequest{DNSNames: r.rec.Names}
	if len(r.rec.Names[0]) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: r.rec.Names[0]}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", 0, fmt.Errorf("make CSR: %w", err)
	}
	o, err := s.ca.Finalize(ctx, acct, r.rec.FinalizeURL, csr)
	var prob *acmeacct.Problem
	if errors.As(err, &prob) && prob.Type == problemOrderNotReady {
		// An earlier try's CSR may have gone through: look at the order.
		if o, err = s.ca.GetOrder(ctx, acct, r.rec.OrderURL); err == nil && o.Status != "processing" && o.Status != "valid" {
			return "", 0, prob
		}
	}
	if err != nil {
		return "", 0, err
	}
	r.rec.Finalized = true
	r.rec.Polls = 0
	if o.Status == "valid" {
		r.rec.CertificateURL = o.CertificateURL
		return StepDownload, 0, nil
	}
	if o.Status == "invalid" {
		return "", 0, s.orderProblem(ctx, r, o)
	}
	return s.wait(r, o.RetryAfter)
}

// certKey returns the issue's key, making and storing it (sealed) first
// if it has none.
func (s *Service) certKey(ctx context.Context, r *run) (crypto.Signer, error) {
	if r.rec.SealedKey != nil {
		return s.openKey(ctx, r.rec)
	}
	var key crypto.Signer
	var err error
	switch r.rec.KeyAlgorithm {
	case KeyRSA:
		bits := r.rec.KeySize
		if bits == 0 {
			bits = 2048
		}
		if bits < 2048 || bits > 8192 {
			return nil, apperr.New(apperr.Invalid, "RSA key size %d is not supported", bits)
		}
		key, err = rsa.GenerateKey(rand.Reader, bits)
	case KeyECDSA, "":
		var curve elliptic.Curve
		switch r.rec.KeySize {
		case 256, 0:
			curve = elliptic.P256()
		case 384:
			curve = elliptic.P384()
		default:
			return nil, apperr.New(apperr.Invalid, "ECDSA key size %d is not supported", r.rec.KeySize)
		}
		key, err = ecdsa.GenerateKey(curve, rand.Reader)
	default:
		return nil, apperr.New(apperr.Invalid, "key algorithm %q is not supported", r.rec.KeyAlgorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	sealed, err := s.sealer.Seal(ctx, der, sealContext(r.rec.UserID, r.rec.ID))
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	r.rec.SealedKey = sealed
	r.rec.UpdatedAt = s.now()
	if err := s.persist(ctx, r); err != nil {
		// Lost to another delivery, or the store failed: retry (and
		// then use the key stored by whoever won).
		return nil, fmt.Errorf("store key: %w", err)
	}
	return key, nil
}

func (s *Service) openKey(ctx context.Context, rec issueRecord) (crypto.Signer, error) {
	der, err := s.sealer.Open(ctx, rec.SealedKey, sealContext(rec.UserID, rec.ID))
	if err != nil {
		return nil, fmt.Errorf("open key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("the stored key is not a signer")
	}
	return signer, nil
}

// download fetches the chain and completes the issue with it.
func (s *Service) download(ctx context.Context, r *run) (string, time.Duration, error) {
	acct, err := s.account(ctx, r)
	if err != nil {
		return "", 0, err
	}
	c, err := s.ca.Download(ctx, acct, r.rec.CertificateURL, s.cfg.PreferredChain)
	if err != nil {
		return "", 0, err
	}
	if err := s.complete(ctx, r, c.ChainPEM, s.window(ctx, acct, c.ChainPEM)); err != nil {
		return "", 0, err
	}
	return StepCleanup, 0, nil
}

// window is the CA's suggested renewal window for the leaf of chainPEM,
// or nil when the CA offers none or cannot be asked now (the renewal is
// then planned at 2/3 of the lifetime, and the renewal check asks again).
func (s *Service) window(ctx context.Context, acct Account, chainPEM []byte) *renewal.Window {
	block, _ := pem.Decode(chainPEM)
	if block == nil {
		return nil
	}
	ri, err := s.ca.RenewalInfo(ctx, acct, block.Bytes)
	if err != nil {
		if !errors.Is(err, ErrNoRenewalInfo) {
			s.log.Info("issuance: no renewal information from the CA; planning at 2/3 of the lifetime", "err", err)
		}
		return nil
	}
	return &renewal.Window{Start: ri.Start, End: ri.End}
}

// complete checks a chain against the issue's key and names, records the
// issued certificate on its record with its renewal planned in window
// (renewal.Plan; nil: at 2/3 of the lifetime) and marks the issue issued
// (unsaved). A chain that does not fit is a *acmeacct.Problem.
func (s *Service) complete(ctx context.Context, r *run, chainPEM []byte, window *renewal.Window) error {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return &acmeacct.Problem{Type: "about:blank", Detail: "the CA served no PEM certificate"}
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return &acmeacct.Problem{Type: "about:blank", Detail: "the CA served an unparsable certificate: " + err.Error()}
	}
	key, err := s.openKey(ctx, r.rec)
	if err != nil {
		return err
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return &acmeacct.Problem{Type: "about:blank", Detail: "the certificate's key is not the key of the CSR"}
	}
	for _, n := range r.rec.Names {
		if !slices.Contains(leaf.DNSNames, n) {
			return &acmeacct.Problem{Type: "about:blank", Detail: fmt.Sprintf("the certificate does not name %s", n)}
		}
	}
	nb, na := leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
	renew := renewal.Plan(nb, na, window, s.now(), nil).Truncate(time.Second)
	check := earliest(renew, s.now().Add(ARICheckEvery))
	if window == nil {
		check = renew // no ARI: nothing to ask again
	}
	if err := s.certs.RecordIssued(ctx, r.rec.UserID, r.rec.CertID, Issued{IssueID: r.rec.ID, NotBefore: nb, NotAfter: na,
		RenewAt: renew, CheckAt: check}); err != nil {
		return err
	}
	r.rec.ChainPEM = string(chainPEM)
	r.rec.NotBefore, r.rec.NotAfter, r.rec.RenewAt = nb, na, renew
	r.rec.Status = StatusIssued
	return nil
}

// fail ends the issue as failed with the reason and deletes its tokens.
func (s *Service) fail(ctx context.Context, r *run, reason string) error {
	s.log.Warn("issuance: issue failed", "issue", r.rec.ID, "certificate", r.rec.CertID, "reason", reason)
	r.rec.Status, r.rec.Error = StatusFailed, reason
	r.rec.Step = StepDone
	r.rec.Seq++
	r.rec.UpdatedAt = s.now()
	if err := s.persist(ctx, r); err != nil && !errors.Is(err, store.ErrConditionFailed) {
		return err
	}
	s.cleanup(ctx, r.rec)
	s.release(ctx, r.rec.Provider, r.rec.Reservation)
	return nil
}

// release gives a failed issue's budget reservation back; a failure only
// leaves the week's count high, so it is logged.
func (s *Service) release(ctx context.Context, provider string, res renewal.Reservation) {
	b := s.cfg.Budgets[provider]
	if res.ID == "" || b == nil {
		return
	}
	if err := b.Release(ctx, res); err != nil {
		s.log.Warn("issuance: giving back a budget reservation failed; the week's count stays high", "err", err)
	}
}

// event is the event of an issue that just ended (issued or failed).
func (s *Service) event(rec issueRecord) events.Event {
	ev := events.Event{UserID: rec.UserID, CertID: rec.CertID, IssueID: rec.ID, At: rec.UpdatedAt}
	switch {
	case rec.Status == StatusFailed:
		ev.Type, ev.Detail = events.Failed, rec.Error
	case rec.Renews != 0:
		ev.Type, ev.Detail = events.Renewed, strings.Join(rec.Names, ", ")
	default:
		ev.Type, ev.Detail = events.Issued, strings.Join(rec.Names, ", ")
	}
	return ev
}

// persist stores r.rec over the version read; the write that moves the
// issue out of pending also deletes the certificate's active marker and
// appends the issue's event.
func (s *Service) persist(ctx context.Context, r *run) error {
	it, err := store.JSONItem(r.it.Key, r.rec)
	if err != nil {
		return err
	}
	if r.rec.Status != StatusPending && r.it.Version > 0 {
		var was issueRecord
		if store.DecodeJSON(r.it, &was) == nil && was.Status == StatusPending {
			ev, err := events.Write(s.event(r.rec))
			if err != nil {
				return err
			}
			err = s.st.Transact(ctx, []store.Write{
				store.PutWrite(it, store.IfVersion(r.it.Version)),
				store.DeleteWrite(activeKey(r.rec.UserID, r.rec.CertID), store.Always),
				ev,
			})
			if err != nil {
				return fmt.Errorf("issuance: store issue %d: %w", r.rec.ID, err)
			}
			it.Version = r.it.Version + 1
			r.it = it
			if r.rec.Status == StatusIssued && s.cfg.OnIssued != nil {
				s.cfg.OnIssued(ctx, r.rec.UserID, r.rec.CertID, r.rec.ID)
			}
			return nil
		}
	}
	stored, err := s.st.Put(ctx, it, store.IfVersion(r.it.Version))
	if err != nil {
		return fmt.Errorf("issuance: store issue %d: %w", r.rec.ID, err)
	}
	r.it = stored
	return nil
}

// send queues the message of rec's current step and Seq.
func (s *Service) send(ctx context.Context, rec issueRecord, delay time.Duration) error {
	body, err := json.Marshal(message{UserID: rec.UserID, CertID: rec.CertID, IssueID: rec.ID, Seq: rec.Seq})
	if err != nil {
		return err
	}
	if _, err := s.q.Send(ctx, queue.Message{Kind: KindPrefix + rec.Step, Body: body}, min(delay, queue.MaxDelay)); err != nil {
		return fmt.Errorf("issuance: queue %s of issue %d: %w", rec.Step, rec.ID, err)
	}
	return nil
}

// Abandon handles a step message that reached the dead-letter queue: its
// step failed on every delivery without an answer (the worker crashed or
// timed out each time). The issue, if the message is still its current
// step, is marked failed, saying so; anything else is left alone.
func (s *Service) Abandon(ctx context.Context, d queue.Delivery) error {
	m, rec, it, ok, err := s.pendingIssue(ctx, d)
	if !ok || rec.Seq != m.Seq {
		return err
	}
	r := &run{rec: rec, it: it}
	return s.fail(ctx, r, fmt.Sprintf("%s: the step failed on every one of %d deliveries without an answer (the worker crashed or timed out); see the worker's log", rec.Step, d.Attempt))
}
