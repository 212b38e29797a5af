package app

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

func (a *App) wireCerts() { a.Certs = certs.New(a.Store, a.ACME, certs.Config{Log: a.Log}) }

func (a *App) certificatesGroup() httpapi.Group { return certctrl.CertificatesGroup(a.Certs, a.Guard) }

// CertificatesHandler serves seed 000's certificate routes (their Lambda).
func (a *App) CertificatesHandler() http.Handler { return a.handler(a.certificatesGroup()) }
