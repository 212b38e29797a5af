package devices

// Key wraps: the exact AEAD construction of cert-ctrl device protocol
// §3.4. Per issue of a certificate (a renewal brings a new key, and so a
// new data key) the server draws a data key K (32 random bytes), encrypts
// the PKCS #8 DER private key with AES-256-GCM under K (12-byte random
// nonce, empty AAD, the 16-byte tag kept apart) and keeps K only sealed
// with the master sealer: the HYBRID policy's master-wrapped copy. Each
// assigned device gets K sealed to its X25519 key with crypto_box_seal
// (nacl/box.SealAnonymous, 80 bytes). Wraps are made when a certificate
// is assigned and when an issue completes (Rewrap), never when a device
// reads its materials. Nothing here logs key material.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Stable reasons of the materials errors, sent as the cert-ctrl envelope's
// error.key. The agent retries a 409 whose body contains WRAP_PENDING.
const (
	// ReasonWrapPending: the device's wrap of the current key is not made
	// yet (409).
	ReasonWrapPending = "WRAP_PENDING"
	// ReasonExportForbidden: MASTER_ONLY without server_decrypt_export
	// (403).
	ReasonExportForbidden = "EXPORT_FORBIDDEN"
	// ReasonNotIssued: MASTER_ONLY before the first issue (409).
	ReasonNotIssued = "NOT_ISSUED"
)

// Materials schemes (deploy-materials enc_scheme).
const (
	SchemeAEAD      = "aes256gcm"
	SchemePlaintext = "plaintext"
)

const (
	// wrapDataKeyLen is K's length (AES-256).
	wrapDataKeyLen = 32
	// wrapNonceLen and wrapTagLen are AES-GCM's.
	wrapNonceLen = 12
	wrapTagLen   = 16
	// wrapSealedKeyLen is crypto_box_seal(K): ephemeral key, box.
	wrapSealedKeyLen = wrapDataKeyLen + box.AnonymousOverhead
)

// wrapErrPending: the wrap cannot be made yet (no issued certificate, or
// the server holds no key for it).
var wrapErrPending = errors.New("devices: wrap pending")

// wrapMaterial is an issue's private key under its data key.
type wrapMaterial struct {
	CertID  int64 `json:"certificate_id"`
	IssueID int64 `json:"issue_id"`
	// SealedDataKey is K sealed with the master sealer (wrapSealContext).
	SealedDataKey []byte    `json:"sealed_data_key"`
	EncPrivKey    []byte    `json:"enc_privkey"`
	Nonce         []byte    `json:"nonce"`
	Tag           []byte    `json:"tag"`
	CreatedAt     time.Time `json:"created_at"`
}

func wrapPrefix(certID int64) string { return fmt.Sprintf("wrap#cert#%019d#issue#", certID) }
func wrapKey(userID, certID, issueID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: wrapPrefix(certID) + fmt.Sprintf("%019d", issueID)}
}

// wrapSealContext binds a sealed data key to its user, certificate and
// issue.
func wrapSealContext(userID, certID, issueID int64) map[string]string {
	return map[string]string{"purpose": "device-data-key", "user": strconv.FormatInt(userID, 10),
		"cert": strconv.FormatInt(certID, 10), "issue": strconv.FormatInt(issueID, 10)}
}

// wrapPendingError is the 409 the agent retries on.
func wrapPendingError(certID int64) error {
	return apperr.New(apperr.Conflict, "WRAP_PENDING: the key of certificate %d is not wrapped for this device yet; retry shortly", certID).
		WithKey(ReasonWrapPending)
}

// SealPrivateKey encrypts der under the data key k with AES-256-GCM, a
// fresh 12-byte nonce and empty AAD, returning the ciphertext and the
// 16-byte tag apart (protocol §3.4 step 4).
func SealPrivateKey(k, der []byte) (ct, nonce, tag []byte, err error) {
	gcm, err := wrapGCM(k)
	if err != nil {
		return nil, nil, nil, err
	}
	nonce = make([]byte, wrapNonceLen)
	rand.Read(nonce)
	out := gcm.Seal(nil, nonce, der, nil)
	n := len(out) - wrapTagLen
	return out[:n:n], nonce, out[n:], nil
}

func wrapGCM(k []byte) (cipher.AEAD, error) {
	if len(k) != wrapDataKeyLen {
		return nil, fmt.Errorf("devices: data key must be %d bytes", wrapDataKeyLen)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// SealDataKey seals k to the device's X25519 public key with
// crypto_box_seal (protocol §3.4 step 5): 80 bytes.
func SealDataKey(k, devicePK []byte) ([]byte, error) {
	if len(devicePK) != 32 {
		return nil, fmt.Errorf("devices: device key must be 32 bytes")
	}
	var pk [32]byte
	copy(pk[:], devicePK)
	return box.SealAnonymous(nil, k, &pk, rand.Reader)
}

// OpenMaterials is the agent's side of §3.4 (for tests and tools): it
// opens encDataKey with the device's key pair, checks K is 32 bytes and
// decrypts the private key (tag appended to the ciphertext).
func OpenMaterials(m Materials, devicePK, deviceSK *[32]byte) ([]byte, error) {
	k, ok := box.OpenAnonymous(nil, m.EncDataKey, devicePK, deviceSK)
	if !ok || len(k) != wrapDataKeyLen {
		return nil, errors.New("devices: the data key does not open with this device key")
	}
	gcm, err := wrapGCM(k)
	if err != nil {
		return nil, err
	}
	if len(m.Nonce) != wrapNonceLen || len(m.Tag) != wrapTagLen {
		return nil, errors.New("devices: bad nonce or tag length")
	}
	return gcm.Open(nil, m.Nonce, append(append([]byte{}, m.EncPrivKey...), m.Tag...), nil)
}

// Materials is what a device deploys a certificate's key from (protocol
// §3.3): the AEAD fields, or (SchemePlaintext) the key in the clear.
type Materials struct {
	Scheme string
	// IssueID is the issue whose key these are.
	IssueID int64
	// AEAD: the device's key fingerprint, K sealed to the device, the key
	// under K, its nonce and tag.
	DeviceKeyFP, EncDataKey, EncPrivKey, Nonce, Tag []byte
	// PrivateKeyDER is the PKCS #8 key (plaintext only): never log it.
	PrivateKeyDER []byte
}

// ForDevice checks that the device (from its access token) may read the
// certificate and returns the certificate. Errors: Forbidden for a device
// that is gone or not active; NotFound when the certificate is not
// assigned to it (or is gone); anything else is transient.
func (a *Assignments) ForDevice(ctx context.Context, userID, deviceID, certID int64) (Device, CertInfo, Assignment, error) {
	d, err := a.assignReg.Get(ctx, userID, deviceID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return Device{}, CertInfo{}, Assignment{}, apperr.New(apperr.Forbidden, "device %d is not registered", deviceID)
	}
	if err != nil {
		return Device{}, CertInfo{}, Assignment{}, err
	}
	if d.Status != StatusActive {
		return Device{}, CertInfo{}, Assignment{}, apperr.New(apperr.Forbidden, "device %d is not active", deviceID)
	}
	as, _, err := a.assignGet(ctx, userID, deviceID, certID)
	if err != nil {
		return Device{}, CertInfo{}, Assignment{}, err
	}
	c, err := a.assignCerts.CertInfo(ctx, userID, certID)
	if err != nil {
		return Device{}, CertInfo{}, Assignment{}, err
	}
	return d, c, as, nil
}

// Materials returns the device's deploy materials of the certificate by
// its policy (protocol §3.5): HYBRID and DEVICE_REQUIRED the AEAD fields
// of the device's wrap; MASTER_ONLY the key decrypted by the server when
// server_decrypt_export allows it. It reads stored wraps only; it never
// makes one. Errors: those of ForDevice; Conflict with Key
// ReasonWrapPending (the message contains WRAP_PENDING too) while the wrap
// of the current key is not made; Forbidden with Key
// ReasonExportForbidden for MASTER_ONLY without server_decrypt_export;
// Conflict with Key ReasonNotIssued for MASTER_ONLY before the first
// issue; NotFound when the server holds no key.
func (a *Assignments) Materials(ctx context.Context, userID, deviceID, certID int64) (Materials, error) {
	d, c, as, err := a.ForDevice(ctx, userID, deviceID, certID)
	if err != nil {
		return Materials{}, err
	}
	if !c.wraps() {
		return a.wrapPlaintext(ctx, userID, c)
	}
	if !wrapReady(d, c, as) {
		return Materials{}, wrapPendingError(certID)
	}
	var m wrapMaterial
	_, err = store.GetJSON(ctx, a.assignSt, wrapKey(userID, certID, as.WrapIssueID), &m)
	if errors.Is(err, store.ErrNotFound) {
		return Materials{}, wrapPendingError(certID)
	}
	if err != nil {
		return Materials{}, fmt.Errorf("devices: read the wrap of certificate %d: %w", certID, err)
	}
	return Materials{Scheme: SchemeAEAD, IssueID: m.IssueID, DeviceKeyFP: d.KeyFP, EncDataKey: as.EncDataKey,
		EncPrivKey: m.EncPrivKey, Nonce: m.Nonce, Tag: m.Tag}, nil
}

// wrapPlaintext is MASTER_ONLY's server-decrypted key.
func (a *Assignments) wrapPlaintext(ctx context.Context, userID int64, c CertInfo) (Materials, error) {
	if !c.ServerDecryptExport {
		return Materials{}, apperr.New(apperr.Forbidden,
			"Server-decrypted export disabled by policy: certificate %d is %s without server_decrypt_export", c.ID, PolicyMasterOnly).
			WithKey(ReasonExportForbidden)
	}
	if c.IssueID == 0 {
		return Materials{}, apperr.New(apperr.Conflict, "certificate %d has not been issued yet", c.ID).WithKey(ReasonNotIssued)
	}
	der, err := a.assignKeys.IssueKey(ctx, userID, c.ID, c.IssueID)
	if err != nil {
		return Materials{}, err
	}
	if len(der) == 0 {
		return Materials{}, apperr.New(apperr.NotFound, "the server does not hold the private key of certificate %d", c.ID)
	}
	return Materials{Scheme: SchemePlaintext, IssueID: c.IssueID, PrivateKeyDER: der}, nil
}

// wrapEnsure returns the material of the certificate's current issue and
// its data key K (the caller clears it), making them when missing.
// wrapErrPending: not issued, or the server holds no key.
func (a *Assignments) wrapEnsure(ctx context.Context, userID int64, c CertInfo) (wrapMaterial, []byte, error) {
	if c.IssueID == 0 {
		return wrapMaterial{}, nil, wrapErrPending
	}
	key := wrapKey(userID, c.ID, c.IssueID)
	encCtx := wrapSealContext(userID, c.ID, c.IssueID)
	for range 2 {
		var m wrapMaterial
		_, err := store.GetJSON(ctx, a.assignSt, key, &m)
		if err == nil {
			k, err := a.assignSealer.Open(ctx, m.SealedDataKey, encCtx)
			if err != nil {
				return wrapMaterial{}, nil, fmt.Errorf("devices: open the data key of certificate %d issue %d: %w", c.ID, c.IssueID, err)
			}
			return m, k, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return wrapMaterial{}, nil, fmt.Errorf("devices: read the wrap of certificate %d: %w", c.ID, err)
		}
		m, k, err := a.wrapMake(ctx, userID, c)
		if err != nil {
			return wrapMaterial{}, nil, err
		}
		it, err := store.JSONItem(key, m)
		if err != nil {
			clear(k)
			return wrapMaterial{}, nil, err
		}
		_, err = a.assignSt.Put(ctx, it, store.IfAbsent)
		if err == nil {
			return m, k, nil
		}
		clear(k)
		if !errors.Is(err, store.ErrConditionFailed) {
			return wrapMaterial{}, nil, fmt.Errorf("devices: store the wrap of certificate %d: %w", c.ID, err)
		}
		// Made concurrently: use that one.
	}
	return wrapMaterial{}, nil, fmt.Errorf("devices: the wrap of certificate %d issue %d keeps changing", c.ID, c.IssueID)
}

// wrapMake draws K and encrypts the issue's key under it.
func (a *Assignments) wrapMake(ctx context.Context, userID int64, c CertInfo) (wrapMaterial, []byte, error) {
	der, err := a.assignKeys.IssueKey(ctx, userID, c.ID, c.IssueID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return wrapMaterial{}, nil, wrapErrPending
	}
	if err != nil {
		return wrapMaterial{}, nil, err
	}
	if len(der) == 0 {
		return wrapMaterial{}, nil, wrapErrPending
	}
	defer clear(der)
	k := make([]byte, wrapDataKeyLen)
	rand.Read(k)
	ct, nonce, tag, err := SealPrivateKey(k, der)
	if err != nil {
		clear(k)
		return wrapMaterial{}, nil, err
	}
	sealed, err := a.assignSealer.Seal(ctx, k, wrapSealContext(userID, c.ID, c.IssueID))
	if err != nil {
		clear(k)
		return wrapMaterial{}, nil, fmt.Errorf("devices: seal the data key of certificate %d: %w", c.ID, err)
	}
	return wrapMaterial{CertID: c.ID, IssueID: c.IssueID, SealedDataKey: sealed, EncPrivKey: ct, Nonce: nonce, Tag: tag,
		CreatedAt: a.assignNow()}, k, nil
}

// wrapDevice makes the device's wrap of the certificate's current key
// unless it has it; it returns the assignment and whether it changed.
// NotFound: not assigned (any more); wrapErrPending.
func (a *Assignments) wrapDevice(ctx context.Context, userID int64, d Device, c CertInfo) (Assignment, bool, error) {
	for range 3 {
		as, it, err := a.assignGet(ctx, userID, d.ID, c.ID)
		if err != nil {
			return Assignment{}, false, err
		}
		if wrapReady(d, c, as) {
			return as, false, nil
		}
		m, k, err := a.wrapEnsure(ctx, userID, c)
		if err != nil {
			return as, false, err
		}
		enc, err := SealDataKey(k, d.PublicKey)
		clear(k)
		if err != nil {
			return as, false, err
		}
		as.WrapIssueID, as.WrapKeyFP, as.EncDataKey, as.UpdatedAt = m.IssueID, d.KeyFP, enc, a.assignNow()
		next, err := store.JSONItem(it.Key, as)
		if err != nil {
			return as, false, err
		}
		_, err = a.assignSt.Put(ctx, next, store.IfVersion(it.Version))
		if err == nil {
			return as, true, nil
		}
		if !errors.Is(err, store.ErrConditionFailed) {
			return as, false, fmt.Errorf("devices: store the wrap of certificate %d for device %d: %w", c.ID, d.ID, err)
		}
		// Changed meanwhile (wrapped concurrently, or unassigned): look again.
	}
	return Assignment{}, false, fmt.Errorf("devices: the assignment of certificate %d to device %d keeps changing", c.ID, d.ID)
}

// Rewrap brings every device the certificate is assigned to up to its
// current key (after an issue completes, a renewal included, or a policy
// change) and signals cert.updated to each, with wrap_ready true where a
// wrap now exists. It is idempotent; app calls it when an issue of the
// certificate is issued. A certificate whose key the server does not hold
// leaves the wraps pending. Errors: NotFound for a missing certificate;
// the transient errors of the devices it could not bring up (the others
// are done).
func (a *Assignments) Rewrap(ctx context.Context, userID, certID int64) error {
	c, err := a.assignCerts.CertInfo(ctx, userID, certID)
	if err != nil {
		return err
	}
	ids, err := a.DevicesOf(ctx, userID, certID)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := a.wrapAndSignal(ctx, userID, id, c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && c.wraps() && c.IssueID != 0 {
		a.wrapForgetOld(ctx, userID, c)
	}
	return errors.Join(errs...)
}

// RewrapDevice makes the device's wraps of every certificate assigned to
// it (after it registered a new key) and signals cert.updated for each.
// Errors: NotFound for a missing device; transient errors.
func (a *Assignments) RewrapDevice(ctx context.Context, userID, deviceID int64) error {
	if _, err := a.assignReg.Get(ctx, userID, deviceID); err != nil {
		return err
	}
	ids, err := a.AssignedCertificates(ctx, userID, deviceID)
	if err != nil {
		return err
	}
	var errs []error
	for _, certID := range ids {
		c, err := a.assignCerts.CertInfo(ctx, userID, certID)
		if apperr.CodeOf(err) == apperr.NotFound {
			continue // deleted: its assignment is moot
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := a.wrapAndSignal(ctx, userID, deviceID, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// wrapAndSignal brings one device up to the certificate's current key
// and signals cert.updated. A device that is gone, or an assignment taken
// back meanwhile, is skipped.
func (a *Assignments) wrapAndSignal(ctx context.Context, userID, deviceID int64, c CertInfo) error {
	d, err := a.assignReg.Get(ctx, userID, deviceID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return nil
	}
	if err != nil {
		return err
	}
	var as Assignment
	if c.wraps() && c.IssueID != 0 {
		as, _, err = a.wrapDevice(ctx, userID, d, c)
		switch {
		case apperr.CodeOf(err) == apperr.NotFound:
			return nil
		case errors.Is(err, wrapErrPending):
			a.assignLog.Warn("devices: no key to wrap for a device; its wrap stays pending", "certificate", c.ID, "issue", c.IssueID, "device", d.ID)
		case err != nil:
			return err
		}
	}
	return a.assignSignal(ctx, userID, d, c, as)
}

// wrapForgetOld deletes the materials of the certificate's earlier
// issues once every device has the current one; a failure only leaves
// them (logged).
func (a *Assignments) wrapForgetOld(ctx context.Context, userID int64, c CertInfo) {
	prefix := wrapPrefix(c.ID)
	page, err := a.assignSt.Query(ctx, store.Query{Table: Table, PK: userPK(userID), SKPrefix: prefix, Limit: store.MaxQueryLimit})
	if err != nil {
		a.assignLog.Warn("devices: listing old wraps failed; they stay", "certificate", c.ID, "err", err)
		return
	}
	for _, it := range page.Items {
		issue, err := strconv.ParseInt(strings.TrimPrefix(it.Key.SK, prefix), 10, 64)
		if err != nil || issue >= c.IssueID {
			continue
		}
		if err := a.assignSt.Delete(ctx, it.Key, store.Always); err != nil {
			a.assignLog.Warn("devices: deleting an old wrap failed; it stays", "certificate", c.ID, "issue", issue, "err", err)
		}
	}
}
