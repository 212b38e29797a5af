package renewal

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
)

// DueSource lists the certificates whose renewal time has come, oldest
// first, at most limit of them (0: the source's default). Errors are the
// source's (a store failure); *certs.Service is one.
type DueSource interface {
	Due(ctx context.Context, now time.Time, limit int) ([]certs.Due, error)
}

// Starter starts the renewal of one certificate: it records an issue and
// queues its first step, without waiting on the CA. An apperr.Conflict
// means an issue of that certificate is already active (a renewal already
// under way, or an issue a person asked for), which is not a failure;
// any other error is.
type Starter interface {
	Renew(ctx context.Context, userID, certID int64) error
}

var _ DueSource = (*certs.Service)(nil)

// ScanError reports the renewals a Scan could not start. Started renewals
// stay started.
type ScanError struct {
	// Due is how many certificates were due; Started, Active (an issue
	// already active) and Failed split them.
	Due, Started, Active, Failed int
	// First is the first failure, also what Unwrap returns.
	First error
}

func (e *ScanError) Error() string {
	return fmt.Sprintf("renewal: %d of %d due certificates failed to start renewing (first: %v)", e.Failed, e.Due, e.First)
}

func (e *ScanError) Unwrap() error { return e.First }

// Scan starts the renewal of at most limit (0: the source's default)
// certificates due at now, one Renew call each, in the order the source
// gives. A failed Renew is logged (slog.Default(), with the user and
// certificate ids) and counted, and the scan goes on; an apperr.Conflict
// is an issue already active, logged at debug level and counted neither
// as started nor as failed. Scan returns how many renewals it started and:
// nil when none failed; a *ScanError when some did; the source's error
// (wrapped, nothing started) when listing failed; ctx's error (wrapped)
// when ctx ended before every due certificate was tried. Running it again
// is harmless: a started renewal is an active issue the next time, and a
// failed one is due again.
func Scan(ctx context.Context, due DueSource, start Starter, now time.Time, limit int) (started int, err error) {
	list, err := due.Due(ctx, now, limit)
	if err != nil {
		return 0, fmt.Errorf("renewal: list certificates due: %w", err)
	}
	log := slog.Default()
	se := ScanError{Due: len(list)}
	for i, d := range list {
		if err := ctx.Err(); err != nil {
			log.WarnContext(ctx, "renewal scan stopped", "started", se.Started, "left", len(list)-i, "err", err)
			return se.Started, fmt.Errorf("renewal: scan stopped with %d of %d due certificates left: %w", len(list)-i, len(list), err)
		}
		err := start.Renew(ctx, d.UserID, d.CertID)
		switch {
		case err == nil:
			se.Started++
		case apperr.CodeOf(err) == apperr.Conflict:
			se.Active++
			log.DebugContext(ctx, "renewal already active", "user_id", d.UserID, "cert_id", d.CertID)
		default:
			se.Failed++
			if se.First == nil {
				se.First = fmt.Errorf("user %d certificate %d: %w", d.UserID, d.CertID, err)
			}
			log.ErrorContext(ctx, "renewal did not start", "user_id", d.UserID, "cert_id", d.CertID,
				"renew_at", d.RenewAt, "err", err)
		}
	}
	if se.Failed > 0 {
		return se.Started, &se
	}
	return se.Started, nil
}
