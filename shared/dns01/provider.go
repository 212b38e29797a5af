package dns01

import (
	"context"
	"fmt"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/issuance"
)

// providerSolver is dns-01-provider: the user's own DNS, written with the
// user's stored credentials.
type providerSolver struct {
	creds issuance.DNSCredentials
	res   resolver
}

var _ issuance.Solver = (*providerSolver)(nil)

// NewProviderSolver returns the dns-01-provider solver. Each Present and
// CleanUp opens the presentation's stored credentials (creds), builds that
// lego provider with them and drops it again, so no credentials stay in
// memory between calls. The provider writes the TXT record at
// "_acme-challenge.<domain>", or where a CNAME there points (lego follows
// it, with the system's resolvers): that is the user's own DNS either way.
// Ready asks resolvers ("host:port"; none means the system's, from
// /etc/resolv.conf) for the record, following CNAMEs.
//
// Errors (see issuance.Solver): apperr Invalid for no stored provider on
// the certificate, the provider codes exec and manual, an unknown code,
// settings that name files (keys ending in _FILE or _PATH) or process-wide
// variables, and settings the provider rejects (its message names what is
// missing); creds' NotFound as it is. Errors from the DNS provider's API
// and from resolvers are transient.
func NewProviderSolver(creds issuance.DNSCredentials, resolvers []string) issuance.Solver {
	return &providerSolver{creds: creds, res: newResolver(resolvers)}
}

// open builds the presentation's provider; it returns the code for
// messages.
func (s *providerSolver) open(ctx context.Context, p issuance.Presentation) (challenge.Provider, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if p.DNSProviderID == 0 {
		return nil, "", apperr.New(apperr.Invalid, "%s has no stored DNS provider to write its dns-01 record with", p.Domain)
	}
	code, settings, err := s.creds.Open(ctx, p.UserID, p.DNSProviderID)
	if err != nil {
		return nil, "", fmt.Errorf("dns01: open DNS provider %d: %w", p.DNSProviderID, err)
	}
	prov, err := userProvider(code, settings)
	if err != nil {
		return nil, "", err
	}
	return prov, code, nil
}

func (s *providerSolver) Present(ctx context.Context, p issuance.Presentation) error {
	prov, code, err := s.open(ctx, p)
	if err != nil {
		return err
	}
	if err := prov.Present(p.Domain, p.Token, p.KeyAuth); err != nil {
		return fmt.Errorf("dns01: %s: present %s: %w", code, recordName(p.Domain), err)
	}
	return nil
}

func (s *providerSolver) Ready(ctx context.Context, p issuance.Presentation) (bool, error) {
	values, err := s.res.txt(ctx, recordName(p.Domain), true)
	if err != nil {
		return false, err
	}
	return hasValue(values, challengeValue(p.KeyAuth)), nil
}

func (s *providerSolver) CleanUp(ctx context.Context, p issuance.Presentation) error {
	prov, code, err := s.open(ctx, p)
	if err != nil {
		return err
	}
	if err := prov.CleanUp(p.Domain, p.Token, p.KeyAuth); err != nil {
		return fmt.Errorf("dns01: %s: clean up %s: %w", code, recordName(p.Domain), err)
	}
	return nil
}
