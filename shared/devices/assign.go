package devices

// Assignments: which of a user's certificates go to which of the user's
// devices (cert-ctrl device protocol §3), the per-device key wraps kept on
// them (wrap.go) and the signals that tell the agent (cert.updated,
// cert.unassigned).
//
// Store layout (table Table, the user's partition):
//
//	user#<user>  assign#dev#<019d device>#cert#<019d cert>  an assignment (Assignment, with the device's wrap)
//	user#<user>  assign#cert#<019d cert>#dev#<019d device>  its reverse (empty value), for DevicesOf
//	user#<user>  wrap#cert#<019d cert>#issue#<019d issue>   the certificate key of that issue under its data key (wrap.go)
//
// Both assignment items are written and deleted in one transaction.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/store"
)

// Key distribution policies as CertInfo carries them (certs.Policy*).
const (
	PolicyHybrid         = "HYBRID"
	PolicyMasterOnly     = "MASTER_ONLY"
	PolicyDeviceRequired = "DEVICE_REQUIRED"
)

// CertInfo is what assignments need to know of a certificate.
type CertInfo struct {
	ID int64
	// Policy is the key distribution policy ("" means HYBRID).
	Policy string
	// ServerDecryptExport allows handing out the key decrypted by the
	// server (MASTER_ONLY devices).
	ServerDecryptExport bool
	// IssueID is the issue of the current certificate, 0 until the first
	// is issued.
	IssueID int64
}

// wraps says whether the policy hands devices the key wrapped to them.
func (c CertInfo) wraps() bool { return c.Policy != PolicyMasterOnly }

// CertLookup reads the user's certificates (certs.Service through an
// adapter). Errors: an apperr NotFound for a missing or another user's
// certificate; anything else is transient.
type CertLookup interface {
	CertInfo(ctx context.Context, userID, certID int64) (CertInfo, error)
}

// IssueKeys opens the private key of a certificate's issue (the issuance
// service's sealed key, opened with the master sealer). It returns the
// PKCS #8 DER, which the caller clears after use, or nil when the server
// holds no key for that issue. Errors: an apperr NotFound for an unknown
// issue; anything else is transient.
type IssueKeys interface {
	IssueKey(ctx context.Context, userID, certID, issueID int64) ([]byte, error)
}

// Assignment is one certificate assigned to one device, with the
// device's wrap of the certificate key when it has been made.
type Assignment struct {
	DeviceID  int64     `json:"device_id"`
	CertID    int64     `json:"certificate_id"`
	CreatedAt time.Time `json:"created_at"`
	// WrapIssueID is the issue whose key EncDataKey unlocks; 0 while the
	// wrap is pending (the protocol's sentinel state).
	WrapIssueID int64 `json:"wrap_issue_id,omitempty"`
	// WrapKeyFP is the fingerprint of the device key EncDataKey is sealed
	// to; a device that registered a new key needs a new wrap.
	WrapKeyFP []byte `json:"wrap_keyfp,omitempty"`
	// EncDataKey is the issue's data key sealed to the device
	// (crypto_box_seal, 80 bytes).
	EncDataKey []byte    `json:"enc_data_key,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// AssignConfig tunes Assignments.
type AssignConfig struct {
	Now func() time.Time
	Log *slog.Logger
}

// Assignments assigns certificates to devices and keeps their key wraps.
// Safe for concurrent use.
type Assignments struct {
	assignReg    *Service
	assignSt     store.Store
	assignCerts  CertLookup
	assignKeys   IssueKeys
	assignSealer keys.Sealer
	assignSig    Signaler
	assignNow    func() time.Time
	assignLog    *slog.Logger
}

// NewAssignments returns the assignments of the devices in reg (over its
// store): certificates are read through certs, issue keys through
// issueKeys, data keys are sealed with sealer (the master-wrapped copy)
// and devices are told through sig.
func NewAssignments(reg *Service, certs CertLookup, issueKeys IssueKeys, sealer keys.Sealer, sig Signaler, cfg AssignConfig) *Assignments {
	if cfg.Now == nil {
		cfg.Now = reg.cfg.Now
	}
	if cfg.Log == nil {
		cfg.Log = reg.cfg.Log
	}
	return &Assignments{assignReg: reg, assignSt: reg.st, assignCerts: certs, assignKeys: issueKeys, assignSealer: sealer, assignSig: sig,
		assignNow: func() time.Time { return cfg.Now().UTC().Truncate(time.Second) }, assignLog: cfg.Log}
}

func assignDevPrefix(deviceID int64) string { return fmt.Sprintf("assign#dev#%019d#cert#", deviceID) }
func assignCertPrefix(certID int64) string  { return fmt.Sprintf("assign#cert#%019d#dev#", certID) }
func assignKey(userID, deviceID, certID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: assignDevPrefix(deviceID) + fmt.Sprintf("%019d", certID)}
}
func assignReverseKey(userID, deviceID, certID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: assignCertPrefix(certID) + fmt.Sprintf("%019d", deviceID)}
}

func assignNotAssigned(deviceID, certID int64) error {
	return apperr.New(apperr.NotFound, "certificate %d is not assigned to device %d", certID, deviceID)
}

// Assign assigns the user's certificate to the user's device (again:
// nothing changes but the wrap, which is made when missing), makes the
// device's wrap when the certificate is issued and its policy wraps, and
// signals cert.updated {"cert_id", "wrap_ready", "device_keyfp_b64"}. It
// returns the assignment and whether it is new. A wrap that cannot be made
// yet stays pending (Rewrap makes it). Errors: NotFound for a missing or
// another user's device or certificate; anything else is transient (a
// retry is safe).
func (a *Assignments) Assign(ctx context.Context, userID, deviceID, certID int64) (Assignment, bool, error) {
	d, err := a.assignReg.Get(ctx, userID, deviceID)
	if err != nil {
		return Assignment{}, false, err
	}
	c, err := a.assignCerts.CertInfo(ctx, userID, certID)
	if err != nil {
		return Assignment{}, false, err
	}
	now := a.assignNow()
	as := Assignment{DeviceID: deviceID, CertID: certID, CreatedAt: now, UpdatedAt: now}
	it, err := store.JSONItem(assignKey(userID, deviceID, certID), as)
	if err != nil {
		return Assignment{}, false, err
	}
	rev := store.Item{Key: assignReverseKey(userID, deviceID, certID), Value: []byte("{}")}
	created := true
	err = a.assignSt.Transact(ctx, []store.Write{store.PutWrite(it, store.IfAbsent), store.PutWrite(rev, store.Always)})
	if errors.Is(err, store.ErrConditionFailed) {
		created = false // assigned before
	} else if err != nil {
		return Assignment{}, false, fmt.Errorf("devices: assign certificate %d to device %d: %w", certID, deviceID, err)
	}
	if c.wraps() && c.IssueID != 0 {
		if as, _, err = a.wrapDevice(ctx, userID, d, c); err != nil && !errors.Is(err, wrapErrPending) {
			return Assignment{}, false, err
		}
	} else if as, _, err = a.assignGet(ctx, userID, deviceID, certID); err != nil {
		return Assignment{}, false, err
	}
	if err := a.assignSignal(ctx, userID, d, c, as); err != nil {
		return Assignment{}, false, err
	}
	return as, created, nil
}

// Unassign takes the certificate off the device (its wrap with it) and
// signals cert.unassigned {"cert_id"}. Errors: NotFound when it was not
// assigned; anything else is transient.
func (a *Assignments) Unassign(ctx context.Context, userID, deviceID, certID int64) error {
	err := a.assignSt.Transact(ctx, []store.Write{
		store.DeleteWrite(assignKey(userID, deviceID, certID), store.IfExists),
		store.DeleteWrite(assignReverseKey(userID, deviceID, certID), store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return assignNotAssigned(deviceID, certID)
	}
	if err != nil {
		return fmt.Errorf("devices: unassign certificate %d from device %d: %w", certID, deviceID, err)
	}
	if err := a.assignSig.Signal(ctx, userID, deviceID, SignalCertUnassigned, map[string]any{"cert_id": certID}); err != nil {
		return fmt.Errorf("devices: certificate %d unassigned from device %d, but signalling it failed: %w", certID, deviceID, err)
	}
	return nil
}

// ForgetDevice deletes every assignment of a deleted device, without
// signals (the device is gone); the device routes' delete should call it.
// Errors are transient (a retry is safe).
func (a *Assignments) ForgetDevice(ctx context.Context, userID, deviceID int64) error {
	return forgetPairs(ctx, a.assignSt, userID, assignDevPrefix(deviceID), func(certID int64) (store.Key, store.Key) {
		return assignKey(userID, deviceID, certID), assignReverseKey(userID, deviceID, certID)
	})
}

// forgetPairs deletes, for each id under prefix in the user's partition,
// the two items keys names (an association and its reverse), each pair
// in one transaction. Errors are transient (a retry is safe).
func forgetPairs(ctx context.Context, st store.Store, userID int64, prefix string, keys func(id int64) (store.Key, store.Key)) error {
	ids, err := idsUnder(ctx, st, userID, prefix)
	if err != nil {
		return err
	}
	for _, id := range ids {
		k, rev := keys(id)
		if err := st.Transact(ctx, []store.Write{store.DeleteWrite(k, store.Always), store.DeleteWrite(rev, store.Always)}); err != nil {
			return fmt.Errorf("devices: forget %s: %w", k, err)
		}
	}
	return nil
}

// Get returns the assignment of the certificate to the device. Errors:
// NotFound when it is not assigned.
func (a *Assignments) Get(ctx context.Context, userID, deviceID, certID int64) (Assignment, error) {
	as, _, err := a.assignGet(ctx, userID, deviceID, certID)
	return as, err
}

// IsAssigned says whether the certificate is assigned to the device.
// Errors are transient.
func (a *Assignments) IsAssigned(ctx context.Context, userID, deviceID, certID int64) (bool, error) {
	_, err := a.assignSt.Get(ctx, assignKey(userID, deviceID, certID))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("devices: read assignment: %w", err)
	}
	return true, nil
}

// AssignedCertificates returns the ids of the certificates assigned to
// the device, ascending. Errors are transient.
func (a *Assignments) AssignedCertificates(ctx context.Context, userID, deviceID int64) ([]int64, error) {
	return idsUnder(ctx, a.assignSt, userID, assignDevPrefix(deviceID))
}

// List returns the device's assignments, by certificate id. Errors are
// transient.
func (a *Assignments) List(ctx context.Context, userID, deviceID int64) ([]Assignment, error) {
	return listJSON[Assignment](ctx, a.assignSt, userID, assignDevPrefix(deviceID))
}

// DevicesOf returns the ids of the devices the certificate is assigned
// to, ascending. Errors are transient.
func (a *Assignments) DevicesOf(ctx context.Context, userID, certID int64) ([]int64, error) {
	return idsUnder(ctx, a.assignSt, userID, assignCertPrefix(certID))
}

// idsUnder reads the ids that end the sort keys under prefix in the
// user's partition, ascending. Errors are transient.
func idsUnder(ctx context.Context, st store.Store, userID int64, prefix string) ([]int64, error) {
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: prefix, Limit: store.MaxQueryLimit}
	out := []int64{}
	for {
		page, err := st.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("devices: list %s: %w", prefix, err)
		}
		for _, it := range page.Items {
			id, err := strconv.ParseInt(strings.TrimPrefix(it.Key.SK, prefix), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("devices: bad item %s", it.Key)
			}
			out = append(out, id)
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return out, nil
		}
	}
}

// listJSON decodes every item under prefix in the user's partition, by
// sort key. Errors are transient.
func listJSON[T any](ctx context.Context, st store.Store, userID int64, prefix string) ([]T, error) {
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: prefix, Limit: store.MaxQueryLimit}
	out, _, err := store.PageJSON(ctx, st, q, nil, func(v T) T { return v }, 0, math.MaxInt)
	if err != nil {
		return nil, fmt.Errorf("devices: list %s: %w", prefix, err)
	}
	return out, nil
}

// assignGet reads an assignment with its item. Errors: NotFound.
func (a *Assignments) assignGet(ctx context.Context, userID, deviceID, certID int64) (Assignment, store.Item, error) {
	var as Assignment
	it, err := store.GetJSON(ctx, a.assignSt, assignKey(userID, deviceID, certID), &as)
	if errors.Is(err, store.ErrNotFound) {
		return Assignment{}, it, assignNotAssigned(deviceID, certID)
	}
	if err != nil {
		return Assignment{}, it, fmt.Errorf("devices: read assignment: %w", err)
	}
	return as, it, nil
}

// wrapReady says whether the assignment holds a wrap of the certificate's
// current key for the device's current key.
func wrapReady(d Device, c CertInfo, as Assignment) bool {
	return c.wraps() && c.IssueID != 0 && as.WrapIssueID == c.IssueID && len(as.EncDataKey) == wrapSealedKeyLen &&
		string(as.WrapKeyFP) == string(d.KeyFP)
}

// assignSignal tells the device its certificate changed.
func (a *Assignments) assignSignal(ctx context.Context, userID int64, d Device, c CertInfo, as Assignment) error {
	ref := map[string]any{"cert_id": c.ID, "wrap_ready": wrapReady(d, c, as), "device_keyfp_b64": base64.StdEncoding.EncodeToString(d.KeyFP)}
	if c.wraps() {
		ref["wrap_alg"] = "x25519"
	}
	if err := a.assignSig.Signal(ctx, userID, d.ID, SignalCertUpdated, ref); err != nil {
		return fmt.Errorf("devices: signal certificate %d to device %d: %w", c.ID, d.ID, err)
	}
	return nil
}
