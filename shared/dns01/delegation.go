package dns01

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/issuance"
)

// delegationSolver is dns-01-delegation: TXT records in certfleet's own
// zone, behind the user's CNAME.
//
// Where the record goes: a lego provider derives the record name from the
// domain it is given (dns01.GetChallengeInfo: "_acme-challenge.<domain>."),
// then follows CNAMEs from that name with recursive CNAME queries to the
// system's resolvers, and writes at the end of the chain (unless
// LEGO_DISABLE_CNAME_SUPPORT is true). The solver gives it the target
// without its "_acme-challenge." label, so the name lego starts from is
// the target itself, never the user's "_acme-challenge.<domain>": the
// user's CNAME decides nothing about where certfleet writes, and pointing
// it at another user's label only fails the CNAME check. What lego could
// still follow is a CNAME at the target, inside certfleet's zone, where
// users write nothing; Present refuses to write when one is there (an
// operator's mistake), so lego's following finds none. Turning following
// off with LEGO_DISABLE_CNAME_SUPPORT is not an option: it is read from
// the process environment on every call, so it would also stop concurrent
// dns-01-provider calls from following the user's own CNAMEs.
type delegationSolver struct {
	zone, code string
	provider   challenge.Provider
	res        resolver
}

var _ issuance.Solver = (*delegationSolver)(nil)

// NewDelegationSolver returns the dns-01-delegation solver: it writes the
// answers for a user's domain at certs.DelegationTarget(zone, user,
// domain) with the lego provider providerCode, configured by the process
// environment (the operator's: route53 in the cloud). Before writing,
// Present checks with the resolvers ("host:port"; none means the system's,
// from /etc/resolv.conf) that "_acme-challenge.<domain>" is a CNAME to that
// target; Ready asks them for the TXT record at the target.
//
// Errors: the constructor fails without a zone or provider code, for the
// manual provider, and when the provider rejects its configuration. Present
// returns an apperr Invalid, with the record to add, when the CNAME is
// missing or points elsewhere; every other error is transient (a resolver
// that does not answer, the provider's API, a CNAME inside the zone at the
// target).
func NewDelegationSolver(zone, providerCode string, resolvers []string) (issuance.Solver, error) {
	zone = strings.ToLower(strings.Trim(strings.TrimSpace(zone), "."))
	code := strings.ToLower(strings.TrimSpace(providerCode))
	switch {
	case zone == "":
		return nil, errors.New("dns01: delegation: no zone configured")
	case code == "":
		return nil, fmt.Errorf("dns01: delegation: no DNS provider configured to write zone %s", zone)
	case code == "manual":
		return nil, fmt.Errorf("dns01: delegation: the manual provider waits for someone at a terminal; configure one that writes zone %s", zone)
	}
	res := newResolver(resolvers)
	if res.err != nil {
		return nil, res.err
	}
	prov, err := processProvider(code)
	if err != nil {
		return nil, fmt.Errorf("dns01: delegation provider %s: %w", code, err)
	}
	return &delegationSolver{zone: zone, code: code, provider: prov, res: res}, nil
}

// target is the name this presentation's answer goes to.
func (s *delegationSolver) target(p issuance.Presentation) string {
	return dns.Fqdn(certs.DelegationTarget(s.zone, p.UserID, p.Domain))
}

// legoDomain is the domain to give lego so that its record name is target.
func legoDomain(target string) string {
	return strings.TrimSuffix(strings.TrimPrefix(target, challengePrefix), ".")
}

func (s *delegationSolver) Present(ctx context.Context, p issuance.Presentation) error {
	target := s.target(p)
	if err := s.checkCNAME(ctx, p.Domain, target); err != nil {
		return err
	}
	inZone, err := s.res.cname(ctx, target)
	if err != nil {
		return err
	}
	if inZone != "" {
		return fmt.Errorf("dns01: %s, in the delegation zone, is a CNAME to %s: lego would write there; remove it", target, inZone)
	}
	if err := s.call(func() error { return s.provider.Present(legoDomain(target), p.Token, p.KeyAuth) }); err != nil {
		return fmt.Errorf("dns01: %s: present %s: %w", s.code, target, err)
	}
	return nil
}

// checkCNAME returns an apperr Invalid unless "_acme-challenge.<domain>"
// is a CNAME to target.
func (s *delegationSolver) checkCNAME(ctx context.Context, domain, target string) error {
	name := dns.Fqdn(recordName(domain))
	found, err := s.res.cname(ctx, name)
	if err != nil {
		return err
	}
	if strings.EqualFold(found, target) {
		return nil
	}
	what := "none"
	if found != "" {
		what = "CNAME → " + strings.TrimSuffix(found, ".")
	}
	return apperr.New(apperr.Invalid, "add a CNAME record %s → %s (found: %s)",
		strings.TrimSuffix(name, "."), strings.TrimSuffix(target, "."), what)
}

func (s *delegationSolver) Ready(ctx context.Context, p issuance.Presentation) (bool, error) {
	values, err := s.res.txt(ctx, s.target(p), false)
	if err != nil {
		return false, err
	}
	return hasValue(values, challengeValue(p.KeyAuth)), nil
}

func (s *delegationSolver) CleanUp(ctx context.Context, p issuance.Presentation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	target := s.target(p)
	if err := s.call(func() error { return s.provider.CleanUp(legoDomain(target), p.Token, p.KeyAuth) }); err != nil {
		return fmt.Errorf("dns01: %s: clean up %s: %w", s.code, target, err)
	}
	return nil
}

// call runs a provider call; one that starts a program (exec) inherits
// the environment of that moment, so it waits out any swap (env.go).
func (s *delegationSolver) call(f func() error) error {
	if s.code == "exec" {
		envMu.RLock()
		defer envMu.RUnlock()
	}
	return f()
}
