// Package renewal decides when certificates renew and keeps renewals
// within the CA's limits, in the certmagic way: first plan without I/O
// (Plan), then act (Scan starts the renewals that are due; Budget counts
// new certificates against the CA's weekly limits before an order is
// placed).
//
// It is domain code: the standard library, shared/* domain packages and
// ports (certs, store, apperr), and golang.org/x/net/publicsuffix for
// registered domains.
package renewal

import (
	"math/rand/v2"
	"time"
)

// Window is a CA's suggested renewal window (ACME Renewal Information,
// RFC 9773 §4.2: issuance.RenewalInfo's Start and End). It is valid when
// End is after Start.
type Window struct {
	Start, End time.Time
}

// Plan returns when to renew a certificate valid from notBefore to
// notAfter, at now:
//
//   - with a valid window (End after Start) whose End is after now: a
//     moment drawn uniformly from [Start, End), or now if that moment has
//     already passed (RFC 9773 §4.3.3: a window that began in the past
//     puts part of its probability on "now");
//   - with a valid window whose End is at or before now: now (the CA asks
//     for renewal at once, e.g. ahead of a revocation);
//   - without a window (nil), or with an invalid one (End at or before
//     Start, which RFC 9773 says to treat as no answer): notBefore plus
//     two thirds of the lifetime, when one third of it is left, as is;
//     that moment may be past, which means "renew now" too.
//
// rnd(n) must return a number in [0, n) (math/rand/v2.Int64N, the
// default when rnd is nil); a result outside is clamped into it. Plan
// does no I/O and, with a deterministic rnd, is a pure function.
func Plan(notBefore, notAfter time.Time, window *Window, now time.Time, rnd func(int64) int64) time.Time {
	if window == nil || !window.End.After(window.Start) {
		life := notAfter.Sub(notBefore)
		return notBefore.Add(life - life/3) // 2/3 of the lifetime, without overflowing
	}
	if !window.End.After(now) {
		return now
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	span := int64(window.End.Sub(window.Start)) // > 0; saturates at ~292 years
	off := min(max(rnd(span), 0), span-1)
	at := window.Start.Add(time.Duration(off))
	if at.Before(now) {
		return now
	}
	return at
}
