package issuance

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/store"
)

// StatusRevoked is an issue whose certificate was revoked.
const StatusRevoked = "revoked"

// problemAlreadyRevoked is the ACME problem for a second revocation.
const problemAlreadyRevoked = "urn:ietf:params:acme:error:alreadyRevoked"

// ValidRevocationReason reports whether reason is an RFC 5280 CRLReason a
// subscriber may give (0..10 except 7, which is unused, and 8,
// removeFromCRL, which is for CRL deltas).
func ValidRevocationReason(reason int) bool {
	return reason >= 0 && reason <= 10 && reason != 7 && reason != 8
}

// Revoke revokes the certificate's newest issued certificate at its CA
// with an RFC 5280 reason, marks that issue revoked and tells the
// certificate record (which then stops renewing). Revoking again answers
// the revoked issue. Errors: Invalid (reason), NotFound (no certificate,
// or nothing issued yet), the CA's refusal as Conflict.
func (s *Service) Revoke(ctx context.Context, userID, certID int64, reason int) (Issue, error) {
	if !ValidRevocationReason(reason) {
		return Issue{}, apperr.InvalidField("reason", "must be an RFC 5280 reason code: 0-6, 9 or 10")
	}
	issues, _, err := s.History(ctx, userID, certID, 50, "")
	if err != nil {
		return Issue{}, err
	}
	var latest *Issue
	for i := range issues {
		if issues[i].Status == StatusIssued || issues[i].Status == StatusRevoked {
			latest = &issues[i]
			break
		}
	}
	if latest == nil {
		return Issue{}, apperr.New(apperr.NotFound, "certificate %d has not been issued yet", certID)
	}
	if latest.Status == StatusRevoked {
		return *latest, nil
	}
	block, _ := pem.Decode([]byte(latest.ChainPEM))
	if block == nil {
		return Issue{}, fmt.Errorf("issuance: issue %d holds no certificate", latest.ID)
	}
	acct, err := s.accounts.Account(ctx, userID, latest.AcctID)
	if err != nil {
		return Issue{}, err
	}
	if err := s.ca.Revoke(ctx, acct, block.Bytes, reason); err != nil {
		var problem *acmeacct.Problem
		if !errors.As(err, &problem) {
			return Issue{}, fmt.Errorf("issuance: revoke: %w", err)
		}
		if problem.Type != problemAlreadyRevoked {
			return Issue{}, apperr.New(apperr.Conflict, "the CA refused the revocation: %s", problem.Detail)
		}
	}
	rec, it, err := s.load(ctx, userID, certID, latest.ID)
	if err != nil {
		return Issue{}, err
	}
	rec.Status, rec.UpdatedAt = StatusRevoked, s.now()
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return Issue{}, err
	}
	ev, err := events.Write(events.Event{Type: events.Revoked, UserID: userID, CertID: certID, IssueID: rec.ID,
		At: rec.UpdatedAt, Detail: fmt.Sprintf("reason %d", reason)})
	if err != nil {
		return Issue{}, err
	}
	if err := s.st.Transact(ctx, []store.Write{store.PutWrite(next, store.IfVersion(it.Version)), ev}); err != nil {
		return Issue{}, fmt.Errorf("issuance: record revocation: %w", err)
	}
	if err := s.certs.RecordRevoked(ctx, userID, certID); err != nil {
		return Issue{}, err
	}
	return rec.Issue, nil
}
