package app

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// wireCerts builds the DNS provider credentials and the certificate
// records that name them; a key policy change queues the rewrap of the
// certificate's devices (KindRewrap).
func (a *App) wireCerts() {
	a.DNSProviders = dnsprov.New(a.Store, a.Sealer, dnsprov.Config{Log: a.Log})
	a.Certs = certs.New(a.Store, a.ACME, certs.Config{Providers: a.DNSProviders, DelegationZone: a.Config.DelegationZone, Log: a.Log,
		OnKeyPolicyChange: a.queueRewrap})
}

// certificatesGroup is the certificate records and the DNS provider
// credentials (one Lambda function: both live in the certs table).
func (a *App) certificatesGroup() httpapi.Group {
	g := certctrl.CertificatesGroup(a.Certs, a.Guard)
	g.Routes = append(g.Routes, certctrl.DNSProviderRoutes(a.DNSProviders, a.Guard)...)
	return g
}

// CertificatesHandler serves seed 000's certificate and DNS provider
// routes (their Lambda).
func (a *App) CertificatesHandler() http.Handler { return a.handler(a.certificatesGroup()) }
