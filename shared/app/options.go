package app

import "github.com/certfleet/certfleet/shared/issuance"

// DNSSolvers builds the DNS-01 solvers by validation method (dns01.Solvers):
// dns-01-provider with the users' stored credentials, and
// dns-01-delegation when zone is set.
type DNSSolvers func(zone, providerCode string, resolvers []string, creds issuance.DNSCredentials) (map[string]issuance.Solver, error)

// Option adjusts how Local and Lambda build an App.
type Option func(*options)

type options struct {
	dns DNSSolvers
}

// WithDNS01 gives the worker its DNS-01 solvers. Only the binaries that
// run the worker pass it (the local server and the worker function), so
// lego's ~195 DNS providers are linked into those alone; an App without
// it fails DNS-01 issues with a message saying so.
func WithDNS01(f DNSSolvers) Option { return func(o *options) { o.dns = f } }

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
