package devices

import "context"

// Signal types a device's update stream carries (cert-ctrl device
// protocol §2.3).
const (
	SignalInstallUpdated = "install.updated"
	SignalCertUpdated    = "cert.updated"
	SignalCertUnassigned = "cert.unassigned"
	SignalResync         = "state.resync_required"
	SignalConfigUpdated  = "config.updated"
)

// Signaler appends a signal to a device's update stream: type and ref
// (the signal's "ref" object) as the agent reads them. The stream gives
// it a ts_ms no other signal of that type on that device has, and a
// cursor. Errors are the store's (transient).
type Signaler interface {
	Signal(ctx context.Context, userID, deviceID int64, typ string, ref map[string]any) error
}
