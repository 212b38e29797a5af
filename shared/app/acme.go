package app

import (
	"fmt"
	"net/http"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/acmeapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// wireACME builds the ACME account service over the CA adapter and
// registers its worker step.
func (a *App) wireACME() error {
	ca, err := acme.New(acme.Config{RootsPEMFile: a.Config.CARootsFile, Timeout: a.Config.CATimeout, UserAgent: "certfleet/" + Version})
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	a.ca = ca
	a.ACME = acmeacct.New(a.Store, a.Sealer, a.Queue, ca, acmeacct.Config{
		Directories: a.Config.CADirectories, MaxRegisterAttempts: a.Config.QueueMaxReceives, Log: a.Log})
	a.Steps.Register(acmeacct.KindRegister, a.ACME.RegisterStep)
	return nil
}

func (a *App) acmeAccountsGroup() httpapi.Group { return certctrl.AcmeAccountsGroup(a.ACME, a.Guard) }
func (a *App) acmeAPIGroup() httpapi.Group      { return acmeapi.Group(a.ACME, a.Guard) }

// AcmeAccountsHandler serves seed 000's ACME account routes (their Lambda).
func (a *App) AcmeAccountsHandler() http.Handler { return a.handler(a.acmeAccountsGroup()) }

// AcmeAPIHandler serves seed 004's /api/v1/acme/* (its Lambda).
func (a *App) AcmeAPIHandler() http.Handler { return a.handler(a.acmeAPIGroup()) }
