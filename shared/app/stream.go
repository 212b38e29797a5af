package app

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// DeviceTokenCacheSize bounds the device access tokens whose verification
// the device-self routes remember (NewCachingVerifier).
const DeviceTokenCacheSize = 10000

// deviceSelfGroup is the routes the agent calls as its device
// (/apiv1/devices/self/*), the group of the polling function URL. Device
// tokens are verified through a bounded cache: an EdDSA check per poll
// would be most of an empty poll's cost.
func (a *App) deviceSelfGroup() httpapi.Group {
	v := httpapi.NewCachingVerifier(a.DeviceTokens, DeviceTokenCacheSize, nil)
	rs := certctrl.DeviceSelfRoutes(a.Stream, v)
	rs = append(rs, a.DeviceCertSelfRoutes(a.Stream, v)...)
	rs = append(rs, a.InstallConfigDeviceRoutes(a.InstallConfigs, v)...)
	rs = append(rs, certctrl.DeviceCASelfRoutes(a.deviceCADeps(v))...)
	return httpapi.Group{Name: "deviceself", Routes: rs}
}

// DeviceSelfHandler serves the device-self routes alone (their Lambda
// function URL).
func (a *App) DeviceSelfHandler() http.Handler { return a.handler(a.deviceSelfGroup()) }
