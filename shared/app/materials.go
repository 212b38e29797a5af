package app

// Certificates on devices: assignments, key wraps and deploy materials
// (cert-ctrl device protocol §3), built from the app's services.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/queue"
)

// CertInfos gives device assignments the user's certificates.
type CertInfos struct{ Certs *certs.Service }

var _ devices.CertLookup = CertInfos{}

// CertInfo reads the certificate's policy and current issue. Errors:
// NotFound.
func (c CertInfos) CertInfo(ctx context.Context, userID, certID int64) (devices.CertInfo, error) {
	cert, err := c.Certs.Get(ctx, userID, certID)
	if err != nil {
		return devices.CertInfo{}, err
	}
	return devices.CertInfo{ID: cert.ID, Policy: cert.Policy, ServerDecryptExport: cert.ServerDecryptExport, IssueID: cert.IssueID}, nil
}

// IssueKeys opens issues' private keys (sealed by the step machine) for
// device wraps and MASTER_ONLY deploy materials.
type IssueKeys struct {
	Issuance *issuance.Service
	Sealer   keys.Sealer
}

var _ devices.IssueKeys = IssueKeys{}

// IssueKey returns the issue's PKCS #8 key, or nil when it has none.
// Errors: NotFound for an unknown issue.
func (k IssueKeys) IssueKey(ctx context.Context, userID, certID, issueID int64) ([]byte, error) {
	sealed, encCtx, err := k.Issuance.SealedKey(ctx, userID, certID, issueID)
	if err != nil {
		return nil, err
	}
	if len(sealed) == 0 {
		return nil, nil
	}
	der, err := k.Sealer.Open(ctx, sealed, encCtx)
	if err != nil {
		return nil, fmt.Errorf("app: open the key of issue %d: %w", issueID, err)
	}
	return der, nil
}

// Assignments is the certificate assignments of the app's devices,
// telling devices through sig (the update stream).
func (a *App) Assignments(sig devices.Signaler) *devices.Assignments {
	return devices.NewAssignments(a.Devices, CertInfos{a.Certs}, IssueKeys{a.Issuance, a.Sealer}, a.Sealer, sig,
		devices.AssignConfig{Log: a.Log})
}

// deviceCertDeps is what the device certificate routes use; v verifies
// device access tokens.
func (a *App) deviceCertDeps(sig devices.Signaler, v httpapi.DeviceVerifier) certctrl.DeviceCertDeps {
	return certctrl.DeviceCertDeps{Assignments: a.Assignments(sig), Devices: a.Devices, Certs: a.Certs, Export: a.Issuance,
		Guard: a.Guard, Verifier: v}
}

// DeviceCertUserRoutes are the user's assignment routes (for the devices
// group): assign, list and unassign under .../devices/{device_id}/certificates
// and POST /apiv1/me/certificate-assign.
func (a *App) DeviceCertUserRoutes(sig devices.Signaler) []httpapi.Route {
	return certctrl.DeviceCertUserRoutes(a.deviceCertDeps(sig, a.DeviceTokens))
}

// DeviceCertSelfRoutes are the device's certificate detail and deploy
// materials (for the /apiv1/devices/self/* group), behind device access
// tokens verified by v (a.DeviceTokens, or its caching verifier).
func (a *App) DeviceCertSelfRoutes(sig devices.Signaler, v httpapi.DeviceVerifier) []httpapi.Route {
	return certctrl.DeviceCertSelfRoutes(a.deviceCertDeps(sig, v))
}

// KindRewrap is the worker message that brings a certificate's devices up
// to its key distribution after its policy changed
// (certs.Config.OnKeyPolicyChange): the certificates function only
// queues it, so it needs no access to keys or devices.
const KindRewrap = "devices.rewrap"

type rewrapMessage struct {
	UserID int64 `json:"user_id"`
	CertID int64 `json:"certificate_id"`
}

// queueRewrap queues KindRewrap for the certificate.
func (a *App) queueRewrap(ctx context.Context, userID, certID int64) error {
	body, err := json.Marshal(rewrapMessage{UserID: userID, CertID: certID})
	if err != nil {
		return err
	}
	if _, err := a.Queue.Send(ctx, queue.Message{Kind: KindRewrap, Body: body}, 0); err != nil {
		return fmt.Errorf("app: queue the rewrap of certificate %d: %w", certID, err)
	}
	return nil
}

// rewrapStep is the worker's handler of KindRewrap: every device the
// certificate is assigned to is brought up to its policy and gets
// cert.updated. A certificate deleted meanwhile is dropped; a transient
// failure is retried.
func (a *App) rewrapStep(ctx context.Context, d queue.Delivery) error {
	var m rewrapMessage
	if err := json.Unmarshal(d.Body, &m); err != nil || m.UserID <= 0 || m.CertID <= 0 {
		a.Log.Error("devices: malformed rewrap message; dropped", "id", d.ID)
		return nil
	}
	err := a.Assignments(a.Stream).Rewrap(ctx, m.UserID, m.CertID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil
	}
	return err
}

// RewrapOnIssued is the hook the step machine calls once an issue of a
// certificate is stored issued (a renewal included): every device the
// certificate is assigned to gets the new key wrapped to it and a
// cert.updated signal. A failure is logged; the devices stay at
// WRAP_PENDING until a later Rewrap (the next issue, an assignment).
func (a *App) RewrapOnIssued(sig devices.Signaler) func(ctx context.Context, userID, certID, issueID int64) {
	return func(ctx context.Context, userID, certID, issueID int64) {
		if err := a.Assignments(sig).Rewrap(ctx, userID, certID); err != nil {
			a.Log.Error("devices: rewrapping a certificate's key for its devices failed; they stay pending",
				"user", userID, "certificate", certID, "issue", issueID, "err", err)
		}
	}
}
