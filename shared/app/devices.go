package app

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// wireDevices builds the device registry and the device authorization
// grant, whose verification page is under the public URL.
func (a *App) wireDevices() {
	a.Devices = devices.New(a.Store, a.DeviceTokens, devices.Config{Log: a.Log})
	a.DeviceGrant = devices.NewGrant(a.Store, devices.GrantConfig{VerificationURI: a.Config.PublicURL + "/device"})
}

func (a *App) devicesGroup() httpapi.Group {
	return certctrl.DevicesGroup(certctrl.DeviceDeps{Devices: a.Devices, Grant: a.DeviceGrant, Tokens: a.DeviceTokens, Guard: a.Guard})
}

// DevicesHandler serves device onboarding and management (its Lambda).
func (a *App) DevicesHandler() http.Handler { return a.handler(a.devicesGroup()) }
