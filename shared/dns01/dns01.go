// Package dns01 answers DNS-01 challenges (issuance.Solver) through lego's
// DNS providers, in two ways:
//
//   - dns-01-provider (NewProviderSolver): the TXT record goes into the
//     user's own DNS, written with the user's stored provider credentials;
//   - dns-01-delegation (NewDelegationSolver): the user points
//     "_acme-challenge.<domain>" at a name in certfleet's own zone with a
//     CNAME once, and certfleet writes the TXT record there with a provider
//     the operator configured.
//
// Both check with the configured resolvers whether the answer is visible
// (Ready). This is the only package that imports lego's providers/dns (the
// architecture test in package shared holds it to that).
package dns01

import (
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"

	"github.com/certfleet/certfleet/shared/issuance"
)

// challengePrefix is the label a DNS-01 answer lives under (RFC 8555 §8.4).
const challengePrefix = "_acme-challenge."

// challengeValue is the TXT value that answers a DNS-01 challenge:
// base64url(SHA-256(key authorization)), unpadded.
func challengeValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// recordName is the name the CA looks up for domain (a wildcard's "*." is
// not part of it).
func recordName(domain string) string {
	return challengePrefix + strings.TrimSuffix(strings.TrimPrefix(domain, "*."), ".")
}

// hasValue reports whether want is among a name's TXT values.
func hasValue(values []string, want string) bool {
	return slices.Contains(values, want)
}

// Solvers returns the DNS-01 solvers by validation method, as the
// issuance worker is configured with them: dns-01-provider always (through
// creds), dns-01-delegation when zone is set (written with the lego
// provider providerCode, configured by the process environment). resolvers
// are host:port for the propagation and CNAME checks; none means the
// system's.
func Solvers(zone, providerCode string, resolvers []string, creds issuance.DNSCredentials) (map[string]issuance.Solver, error) {
	out := map[string]issuance.Solver{issuance.MethodDNS01Provider: NewProviderSolver(creds, resolvers)}
	if zone != "" {
		d, err := NewDelegationSolver(zone, providerCode, resolvers)
		if err != nil {
			return nil, err
		}
		out[issuance.MethodDNS01Delegation] = d
	}
	return out, nil
}
