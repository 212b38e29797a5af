package app

import (
	"context"
	"net/http"

	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
)

// wireDevices builds the device registry and the device authorization
// grant, whose verification page is under the public URL. A deleted
// device's update stream is closed and everything kept for it is
// forgotten (assignments, CAs, config files, install configs); a device that
// re-registers with another key (a new install) gets its certificates
// wrapped to the new key and then state.resync_required, so that it
// fetches everything again. Install configs and assignments signal
// devices through the stream.
func (a *App) wireDevices() {
	a.Stream = devices.NewStream(a.Store, devices.StreamConfig{})
	a.Devices = devices.New(a.Store, a.DeviceTokens, devices.Config{Log: a.Log,
		OnDelete: func(ctx context.Context, userID, deviceID int64) error {
			if err := a.Stream.Close(ctx, deviceID); err != nil {
				return err
			}
			for _, forget := range []func(context.Context, int64, int64) error{a.Assignments(a.Stream).ForgetDevice,
				a.CAAssociations().ForgetDevice, a.ConfigFiles().ForgetDevice, a.InstallConfigs.ForgetDevice} {
				if err := forget(ctx, userID, deviceID); err != nil {
					return err
				}
			}
			return nil
		},
		OnKeyChange: func(ctx context.Context, userID, deviceID int64) error {
			if err := a.Assignments(a.Stream).RewrapDevice(ctx, userID, deviceID); err != nil {
				return err
			}
			return a.Stream.Signal(ctx, userID, deviceID, devices.SignalResync,
				map[string]any{"action": "full_resync", "reason": "device_key_changed"})
		},
	})
	a.DeviceGrant = devices.NewGrant(a.Store, devices.GrantConfig{VerificationURI: a.Config.PublicURL + "/device"})
	a.InstallConfigs = a.NewInstallConfigs(a.Stream)
	a.Steps.Register(KindRewrap, a.rewrapStep)
}

// ConfigFiles is the config files of the app's devices, signalled through
// the update stream.
func (a *App) ConfigFiles() *devices.ConfigFiles { return devices.NewConfigFiles(a.Devices, a.Stream) }

// devicesGroup is device onboarding and management with the user's
// certificate assignments, CA associations, config files and install
// configs.
func (a *App) devicesGroup() httpapi.Group {
	g := certctrl.DevicesGroup(certctrl.DeviceDeps{Devices: a.Devices, Grant: a.DeviceGrant, Tokens: a.DeviceTokens, Guard: a.Guard})
	g.Routes = append(g.Routes, a.DeviceCertUserRoutes(a.Stream)...)
	g.Routes = append(g.Routes, a.InstallConfigUserRoutes(a.InstallConfigs)...)
	g.Routes = append(g.Routes, certctrl.DeviceCAUserRoutes(a.deviceCADeps(a.DeviceTokens))...)
	g.Routes = append(g.Routes, certctrl.ConfigFileRoutes(a.ConfigFiles(), a.Guard)...)
	g.Routes = certctrl.MergeDeviceGets(g.Routes)
	return g
}

// DevicesHandler serves device onboarding and management (its Lambda).
func (a *App) DevicesHandler() http.Handler { return a.handler(a.devicesGroup()) }
