package issuance

// Renewal: the scheduler finds certificates whose renewal check is due
// (certs' renewal index) and queues KindRenewalCheck for each; the check
// plans with the CA's current ARI window, without other I/O, and then
// either starts the renewal or records the plan and when to look again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/renewal"
	"github.com/certfleet/certfleet/shared/store"
)

// KindRenewalCheck is the queue message kind of a renewal check, to
// register with the worker (Service.RenewalCheck).
const KindRenewalCheck = "renewal.check"

// ARICheckEvery is how often an issued certificate's ARI window is asked
// for again when the CA gives no Retry-After (Let's Encrypt suggests six
// hours): a CA may move the window earlier, e.g. ahead of a revocation.
const ARICheckEvery = 6 * time.Hour

// RenewalRetryAfter is when a certificate whose renewal was started is
// looked at again if that renewal failed: at most one renewal attempt an
// hour per certificate.
const RenewalRetryAfter = time.Hour

// ExpiringWithin is how close to its expiry a certificate still not
// renewed is announced (events.Expiring).
const ExpiringWithin = 14 * 24 * time.Hour

// renewalMessage is the body of a renewal check.
type renewalMessage struct {
	UserID int64 `json:"user_id"`
	CertID int64 `json:"certificate_id"`
}

// QueueRenewalCheck queues a renewal check of the certificate (the
// renewal scan's Starter). Duplicates are harmless.
func (s *Service) QueueRenewalCheck(ctx context.Context, userID, certID int64) error {
	body, err := json.Marshal(renewalMessage{UserID: userID, CertID: certID})
	if err != nil {
		return err
	}
	if _, err := s.q.Send(ctx, queue.Message{Kind: KindRenewalCheck, Body: body}, 0); err != nil {
		return fmt.Errorf("issuance: queue the renewal check of certificate %d: %w", certID, err)
	}
	return nil
}

// RenewalCheck is the worker's handler of KindRenewalCheck: it asks the
// CA for the current ARI window of the certificate's current issue, plans
// the renewal in it (renewal.Plan) and starts the renewal when the plan
// is due, else records the plan and the next check. A certificate gone,
// revoked or never issued is dropped; a transient failure is retried.
func (s *Service) RenewalCheck(ctx context.Context, d queue.Delivery) error {
	var m renewalMessage
	if err := json.Unmarshal(d.Body, &m); err != nil || m.UserID <= 0 || m.CertID <= 0 {
		s.log.Error("issuance: malformed renewal check; dropped", "id", d.ID)
		return nil
	}
	due, plan, next, cur, err := s.planRenewal(ctx, m.UserID, m.CertID)
	switch code := apperr.CodeOf(err); {
	case err == nil:
	case code == apperr.NotFound || code == apperr.Conflict:
		s.log.Info("issuance: renewal check dropped", "certificate", m.CertID, "reason", apperr.MessageOf(err))
		return nil
	default:
		return err
	}
	if err := s.warnExpiring(ctx, cur); err != nil {
		return err
	}
	if !due {
		return s.certs.PlanRenewal(ctx, m.UserID, m.CertID, plan, next)
	}
	// Look again in RenewalRetryAfter: the renewal's issue may fail, and
	// a renewed certificate records a new plan anyway.
	if err := s.certs.PlanRenewal(ctx, m.UserID, m.CertID, plan, s.now().Add(RenewalRetryAfter)); err != nil {
		return err
	}
	is, err := s.Start(ctx, m.UserID, m.CertID)
	if apperr.CodeOf(err) == apperr.RateLimit {
		// Over the CA's weekly budget: look again when it frees up.
		s.log.Warn("issuance: renewal postponed", "certificate", m.CertID, "reason", apperr.MessageOf(err))
		return s.certs.PlanRenewal(ctx, m.UserID, m.CertID, plan, s.now().Add(ARICheckEvery))
	}
	if err != nil {
		return err
	}
	s.log.Info("issuance: renewal started", "certificate", m.CertID, "issue", is.ID)
	return nil
}

// planRenewal reads the certificate's current issue and the CA's window
// for it and says whether the renewal is due, when it is planned, and
// when to check again. Errors: NotFound, Conflict (not issued, revoked:
// nothing to renew); others transient.
func (s *Service) planRenewal(ctx context.Context, userID, certID int64) (due bool, plan, next time.Time, cur issueRecord, err error) {
	spec, err := s.certs.Spec(ctx, userID, certID)
	if err != nil {
		return false, plan, next, cur, err
	}
	if spec.IssueID == 0 || spec.Revoked {
		return false, plan, next, cur, apperr.New(apperr.Conflict, "certificate %d has no current certificate to renew", certID)
	}
	if cur, _, err = s.load(ctx, userID, certID, spec.IssueID); err != nil {
		return false, plan, next, cur, err
	}
	leaf, err := leafOf(cur.ChainPEM)
	if err != nil {
		return false, plan, next, cur, apperr.New(apperr.Conflict, "issue %d holds no certificate", cur.ID)
	}
	now := s.now()
	next = now.Add(ARICheckEvery)
	var window *renewal.Window
	if acct, err := s.accounts.Account(ctx, userID, spec.AcctID); err == nil {
		ri, err := s.ca.RenewalInfo(ctx, acct, leaf.Raw)
		switch {
		case err == nil:
			window = &renewal.Window{Start: ri.Start, End: ri.End}
			if ri.RetryAfter > 0 {
				next = now.Add(ri.RetryAfter)
			}
		case !errors.Is(err, ErrNoRenewalInfo):
			s.log.Info("issuance: no renewal information now; planning without it", "certificate", certID, "err", err)
		}
	}
	plan = renewal.Plan(leaf.NotBefore, leaf.NotAfter, window, now, nil).Truncate(time.Second)
	return !plan.After(now), plan, earliest(plan, next), cur, nil
}

// warnExpiring appends the certificate.expiring event, once per issued
// certificate, when it expires within ExpiringWithin (its renewal has not
// happened in time).
func (s *Service) warnExpiring(ctx context.Context, cur issueRecord) error {
	if cur.NotAfter.IsZero() || cur.NotAfter.Sub(s.now()) > ExpiringWithin {
		return nil
	}
	ev, err := events.Write(events.Event{Type: events.Expiring, UserID: cur.UserID, CertID: cur.CertID, IssueID: cur.ID,
		At: s.now(), Detail: "expires at " + cur.NotAfter.Format(time.RFC3339)})
	if err != nil {
		return err
	}
	once := store.Item{Key: store.Key{Table: Table, PK: userPK(cur.UserID), SK: fmt.Sprintf("expiring#%019d", cur.ID)},
		Value: []byte("1"), ExpiresAt: cur.NotAfter.Add(events.Retention)}
	err = s.st.Transact(ctx, []store.Write{store.PutWrite(once, store.IfAbsent), ev})
	if errors.Is(err, store.ErrConditionFailed) {
		return nil // told already
	}
	return err
}

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
