package app

import (
	"context"
	"net/http"

	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// wireCAs builds the private CAs; deleting one first takes it off every
// device it is on (ca.unassigned through the update stream).
func (a *App) wireCAs() {
	a.CAs = cas.New(a.Store, a.Sealer, cas.Config{Log: a.Log,
		OnDelete: func(ctx context.Context, userID, caID int64) error {
			return a.CAAssociations().ForgetCA(ctx, userID, caID)
		}})
}

// CAAssociations is the private CAs on the app's devices, signalled
// through the update stream.
func (a *App) CAAssociations() *devices.CAAssociations {
	return devices.NewCAAssociations(a.Devices, a.CAs, a.Stream)
}

// casGroup is the private CA routes (their Lambda).
func (a *App) casGroup() httpapi.Group { return certctrl.CAsGroup(a.CAs, a.Guard) }

// CAsHandler serves seed 000's private CA routes (their Lambda).
func (a *App) CAsHandler() http.Handler { return a.handler(a.casGroup()) }

// deviceCADeps is what the device CA routes use; v verifies device
// access tokens.
func (a *App) deviceCADeps(v httpapi.DeviceVerifier) certctrl.DeviceCADeps {
	return certctrl.DeviceCADeps{CAs: a.CAAssociations(), Devices: a.Devices, Guard: a.Guard, Verifier: v}
}
