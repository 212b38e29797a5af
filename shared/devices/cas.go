package devices

// CA associations: which of a user's private CAs a device trusts
// (cert-ctrl device protocol §4.1), and the signals that tell its agent
// (ca.assigned, ca.unassigned).
//
// Store layout (table Table, the user's partition):
//
//	user#<user>  ca#dev#<019d device>#ca#<019d ca>  an association (CAAssociation)
//	user#<user>  ca#ca#<019d ca>#dev#<019d device>  its reverse (empty value), for ForgetCA
//
// Both items are written and deleted in one transaction; the one that
// writes them also checks the CA is unchanged since it was read, so no
// association outlives a CA's deletion (cas.Service.Delete).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/store"
)

// Signal types of CA associations.
const (
	SignalCAAssigned   = "ca.assigned"
	SignalCAUnassigned = "ca.unassigned"
)

// CALookup reads the user's CAs (cas.Service). Errors: NotFound for a
// missing, deleted or another user's CA; anything else is transient.
type CALookup interface {
	Info(ctx context.Context, userID, caID int64) (cas.Info, error)
}

// CAAssociation is one CA on one device: its name and serial as they
// were when it was associated (ca.unassigned repeats them).
type CAAssociation struct {
	DeviceID  int64     `json:"device_id"`
	CAID      int64     `json:"ca_id"`
	CAName    string    `json:"ca_name"`
	Serial    string    `json:"serial_number"`
	CreatedAt time.Time `json:"created_at"`
}

// CAAssociations puts private CAs on devices. Safe for concurrent use.
type CAAssociations struct {
	caReg *Service
	caSt  store.Store
	cas   CALookup
	caSig Signaler
}

// NewCAAssociations returns the CA associations of the devices in reg
// (over its store), reading CAs through lookup and telling devices
// through sig.
func NewCAAssociations(reg *Service, lookup CALookup, sig Signaler) *CAAssociations {
	return &CAAssociations{caReg: reg, caSt: reg.st, cas: lookup, caSig: sig}
}

func caDevPrefix(deviceID int64) string { return fmt.Sprintf("ca#dev#%019d#ca#", deviceID) }
func caCAPrefix(caID int64) string      { return fmt.Sprintf("ca#ca#%019d#dev#", caID) }
func caAssocKey(userID, deviceID, caID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: caDevPrefix(deviceID) + fmt.Sprintf("%019d", caID)}
}
func caAssocReverseKey(userID, deviceID, caID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: caCAPrefix(caID) + fmt.Sprintf("%019d", deviceID)}
}

func caNotAssociated(deviceID, caID int64) error {
	return apperr.New(apperr.NotFound, "CA %d is not associated with device %d", caID, deviceID)
}

// Associate puts the user's CA on the user's device and signals
// ca.assigned {"ca_id", "ca_name", "serial"} (again when it was already
// there: the agent imports it idempotently). It returns the association
// and whether it is new. Errors: NotFound for a missing or another
// user's device or CA; Conflict when the CA changed or is being deleted
// meanwhile; anything else is transient.
func (c *CAAssociations) Associate(ctx context.Context, userID, deviceID, caID int64) (CAAssociation, bool, error) {
	if _, err := c.caReg.Get(ctx, userID, deviceID); err != nil {
		return CAAssociation{}, false, err
	}
	ca, err := c.cas.Info(ctx, userID, caID)
	if err != nil {
		return CAAssociation{}, false, err
	}
	as := CAAssociation{DeviceID: deviceID, CAID: caID, CAName: ca.Name, Serial: ca.SerialNumber, CreatedAt: c.caReg.now()}
	it, err := store.JSONItem(caAssocKey(userID, deviceID, caID), as)
	if err != nil {
		return CAAssociation{}, false, err
	}
	rev := store.Item{Key: caAssocReverseKey(userID, deviceID, caID), Value: []byte("{}")}
	created := true
	err = c.caSt.Transact(ctx, []store.Write{ca.Check, store.PutWrite(it, store.IfAbsent), store.PutWrite(rev, store.Always)})
	if errors.Is(err, store.ErrConditionFailed) {
		// Either it was associated before, or the CA changed meanwhile.
		created = false
		if as, err = c.get(ctx, userID, deviceID, caID); apperr.CodeOf(err) == apperr.NotFound {
			return CAAssociation{}, false, apperr.New(apperr.Conflict, "CA %d changed meanwhile; try again", caID)
		}
	}
	if err != nil {
		return CAAssociation{}, false, fmt.Errorf("devices: associate CA %d with device %d: %w", caID, deviceID, err)
	}
	if err := c.signal(ctx, userID, SignalCAAssigned, as); err != nil {
		return CAAssociation{}, false, err
	}
	return as, created, nil
}

// Dissociate takes the CA off the device and signals ca.unassigned.
// Errors: NotFound when it was not on it; anything else is transient.
func (c *CAAssociations) Dissociate(ctx context.Context, userID, deviceID, caID int64) error {
	as, err := c.get(ctx, userID, deviceID, caID)
	if err != nil {
		return err
	}
	err = c.caSt.Transact(ctx, []store.Write{
		store.DeleteWrite(caAssocKey(userID, deviceID, caID), store.IfExists),
		store.DeleteWrite(caAssocReverseKey(userID, deviceID, caID), store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return caNotAssociated(deviceID, caID) // dissociated concurrently, which signalled
	}
	if err != nil {
		return fmt.Errorf("devices: dissociate CA %d from device %d: %w", caID, deviceID, err)
	}
	return c.signal(ctx, userID, SignalCAUnassigned, as)
}

// ForgetCA takes a CA that is being deleted off every device it is on,
// with their signals. Errors are transient; a retry finishes it.
func (c *CAAssociations) ForgetCA(ctx context.Context, userID, caID int64) error {
	ids, err := idsUnder(ctx, c.caSt, userID, caCAPrefix(caID))
	if err != nil {
		return err
	}
	for _, deviceID := range ids {
		if err := c.Dissociate(ctx, userID, deviceID, caID); err != nil && apperr.CodeOf(err) != apperr.NotFound {
			return err
		}
	}
	return nil
}

// ForgetDevice deletes every CA association of a deleted device,
// without signals. Errors are transient (a retry is safe).
func (c *CAAssociations) ForgetDevice(ctx context.Context, userID, deviceID int64) error {
	return forgetPairs(ctx, c.caSt, userID, caDevPrefix(deviceID), func(caID int64) (store.Key, store.Key) {
		return caAssocKey(userID, deviceID, caID), caAssocReverseKey(userID, deviceID, caID)
	})
}

// List returns the CAs on the device, by CA id. Errors are transient.
func (c *CAAssociations) List(ctx context.Context, userID, deviceID int64) ([]CAAssociation, error) {
	return listJSON[CAAssociation](ctx, c.caSt, userID, caDevPrefix(deviceID))
}

// Get returns the association of the CA with the device. Errors:
// NotFound when the CA is not on it.
func (c *CAAssociations) Get(ctx context.Context, userID, deviceID, caID int64) (CAAssociation, error) {
	return c.get(ctx, userID, deviceID, caID)
}

// CA returns the user's CA. Errors: NotFound.
func (c *CAAssociations) CA(ctx context.Context, userID, caID int64) (cas.CA, error) {
	info, err := c.cas.Info(ctx, userID, caID)
	return info.CA, err
}

// Bundle returns a CA on the device for its trust store. Errors:
// NotFound when the CA is not on the device (or was deleted); Forbidden
// when the CA is inactive.
func (c *CAAssociations) Bundle(ctx context.Context, userID, deviceID, caID int64) (cas.CA, error) {
	if _, err := c.get(ctx, userID, deviceID, caID); err != nil {
		return cas.CA{}, err
	}
	ca, err := c.cas.Info(ctx, userID, caID)
	if err != nil {
		return cas.CA{}, err
	}
	if !ca.Active() {
		return cas.CA{}, apperr.New(apperr.Forbidden, "CA %d is %s", caID, ca.Status)
	}
	return ca.CA, nil
}

func (c *CAAssociations) get(ctx context.Context, userID, deviceID, caID int64) (CAAssociation, error) {
	var as CAAssociation
	_, err := store.GetJSON(ctx, c.caSt, caAssocKey(userID, deviceID, caID), &as)
	if errors.Is(err, store.ErrNotFound) {
		return CAAssociation{}, caNotAssociated(deviceID, caID)
	}
	if err != nil {
		return CAAssociation{}, fmt.Errorf("devices: read CA association: %w", err)
	}
	return as, nil
}

func (c *CAAssociations) signal(ctx context.Context, userID int64, typ string, as CAAssociation) error {
	ref := map[string]any{"ca_id": as.CAID, "ca_name": as.CAName, "serial": as.Serial}
	if err := c.caSig.Signal(ctx, userID, as.DeviceID, typ, ref); err != nil {
		return fmt.Errorf("devices: CA %d on device %d changed, but signalling it failed: %w", as.CAID, as.DeviceID, err)
	}
	return nil
}
