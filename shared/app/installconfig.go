package app

import (
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// InstallConfigGroupName names the group InstallConfigGroup returns.
const InstallConfigGroupName = "install-config"

// NewInstallConfigs builds the install config service over the app's
// store and device registry; it signals install.updated through sig (the
// device update stream, a.Stream).
func (a *App) NewInstallConfigs(sig devices.Signaler) *devices.InstallConfigs {
	return devices.NewInstallConfigs(a.Store, a.Devices, sig, devices.InstallConfigsConfig{Log: a.Log})
}

// InstallConfigUserRoutes are the install config routes of users and of
// API-key automation (session or API key, through the guard): they belong
// with the devices group.
func (a *App) InstallConfigUserRoutes(ic *devices.InstallConfigs) []httpapi.Route {
	return certctrl.InstallConfigRoutes(ic, a.Devices, a.Guard)
}

// InstallConfigDeviceRoutes are the agent's install-config fetch and
// version notify under /apiv1/devices/self/, verifying device access
// tokens with v: they belong with the device-self group (its function
// URL serves /apiv1/devices/self/*).
func (a *App) InstallConfigDeviceRoutes(ic *devices.InstallConfigs, v httpapi.DeviceVerifier) []httpapi.Route {
	return certctrl.DeviceSelfInstallRoutes(ic, v)
}

// InstallConfigGroup is every install config route as one group, device
// tokens verified by a.DeviceTokens (tests, or a shape that mounts it on
// its own).
func (a *App) InstallConfigGroup(ic *devices.InstallConfigs) httpapi.Group {
	return httpapi.Group{Name: InstallConfigGroupName,
		Routes: append(a.InstallConfigUserRoutes(ic), a.InstallConfigDeviceRoutes(ic, a.DeviceTokens)...)}
}
