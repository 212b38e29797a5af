package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// caBundle is a CA bundle (§4.1) as the agent reads it.
type caBundle struct {
	ID           flexInt `json:"id"`
	Name         string  `json:"name"`
	SerialNumber string  `json:"serial_number"`
	Status       string  `json:"status"`
	Algorithm    string  `json:"algorithm"`
	KeySize      flexInt `json:"key_size"`
	ValidDays    flexInt `json:"valid_days"`
	PEM          string  `json:"ca_certificate_pem"`
	DERB64       string  `json:"ca_certificate_der_b64"`
}

// caMeta is a CA's meta.json.
type caMeta struct {
	CAID              int64     `json:"ca_id"`
	Name              string    `json:"name"`
	SerialNumber      string    `json:"serial_number"`
	Status            string    `json:"status"`
	Algorithm         string    `json:"algorithm"`
	KeySize           int64     `json:"key_size"`
	ValidDays         int64     `json:"valid_days"`
	Subject           string    `json:"subject"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	SHA256Fingerprint string    `json:"sha256_fingerprint"`
}

// caFiles are a CA's virtual files: ca.pem, ca.der and meta.json (0644).
func caFiles(caID int64, b *caBundle) (map[string]vfile, error) {
	blk, _ := pem.Decode([]byte(b.PEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("CA %d: ca_certificate_pem is not a PEM certificate", caID)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA %d: ca_certificate_pem: %w", caID, err)
	}
	if b.DERB64 != "" {
		der, err := base64.StdEncoding.DecodeString(b.DERB64)
		if err != nil || !bytes.Equal(der, cert.Raw) {
			return nil, fmt.Errorf("CA %d: ca_certificate_der_b64 is not the PEM's certificate", caID)
		}
	}
	pemText := []byte(b.PEM)
	if !bytes.HasSuffix(pemText, []byte("\n")) {
		pemText = append(pemText, '\n')
	}
	fp := sha256.Sum256(cert.Raw)
	meta, err := json.MarshalIndent(caMeta{CAID: caID, Name: b.Name, SerialNumber: b.SerialNumber, Status: b.Status,
		Algorithm: b.Algorithm, KeySize: int64(b.KeySize), ValidDays: int64(b.ValidDays), Subject: cert.Subject.String(),
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), SHA256Fingerprint: hex.EncodeToString(fp[:])}, "", "  ")
	if err != nil {
		return nil, err
	}
	return map[string]vfile{
		"ca.pem":    {pemText, 0o644},
		"ca.der":    {cert.Raw, 0o644},
		"meta.json": {append(meta, '\n'), 0o644},
	}, nil
}

// caDir is cas/<id> in the state directory: the CA's ca.pem and
// meta.json as last fetched.
func (a *Agent) caDir(caID int64) string {
	return a.path(filepath.Join("cas", strconv.FormatInt(caID, 10)))
}

// trustFile is the CA's anchor in TrustDir.
func (a *Agent) trustFile(caID int64) string {
	return filepath.Join(a.TrustDir, fmt.Sprintf("certfleet-ca-%d.crt", caID))
}

// keptCAs are the CAs with a copy in the state directory.
func (a *Agent) keptCAs() []int64 {
	entries, _ := os.ReadDir(a.path("cas"))
	var ids []int64
	for _, e := range entries {
		if id, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && id > 0 && e.IsDir() {
			ids = append(ids, id)
		}
	}
	return ids
}

// importsCA reports whether the item is an enabled import_ca item of
// the CA.
func (it installItem) importsCA(caID int64) bool {
	return it.enabled() && it.Type == "import_ca" && it.ObType == "ca" && int64(it.ObID) == caID
}

// badImportCA is the failure of an enabled import_ca item without
// ob_type "ca" and an ob_id (nil for any other item).
func (it installItem) badImportCA() error {
	if !it.enabled() || it.Type != "import_ca" || (it.ObType == "ca" && it.ObID > 0) {
		return nil
	}
	return fmt.Errorf("install item %q: import_ca needs ob_type \"ca\" and an ob_id", it.ID)
}

// Outcomes of a CA bundle fetch other than a bundle.
var (
	// errCAGone is 404: the CA is not assigned to the device.
	errCAGone = errors.New("not assigned to this device")
	// errCARefused is 403: the CA is inactive or not the device
	// owner's.
	errCARefused = errors.New("refused")
	// errCALater is 503, 429, another 5xx or a transport error: the
	// CA is fetched again on the next poll.
	errCALater = errors.New("unavailable")
)

// fetchCA gets the CA's bundle (§4.1).
func (a *Agent) fetchCA(ctx context.Context, caID int64) (*caBundle, error) {
	r, err := a.device(ctx, "GET", fmt.Sprintf("/apiv1/devices/self/cas/%d/bundle?pack=download", caID), nil, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errCALater, err)
	}
	switch {
	case r.Status == 404:
		return nil, fmt.Errorf("%w: %v", errCAGone, r.failure("CA bundle"))
	case r.Status == 403:
		return nil, fmt.Errorf("%w: %v", errCARefused, r.failure("CA bundle"))
	case r.Status == 429 || r.Status >= 500:
		return nil, fmt.Errorf("%w: %v", errCALater, r.failure("CA bundle"))
	case r.Status != 200:
		return nil, r.failure("CA bundle")
	}
	var b caBundle
	if err := r.data(&b); err != nil {
		return nil, fmt.Errorf("CA %d bundle: %w", caID, err)
	}
	return &b, nil
}

// caOp is one CA of a batch: imported (ca.assigned, a resync, a fetch
// again) or removed (ca.unassigned).
type caOp struct {
	id     int64
	remove bool
	resync bool
}

// applyCAs handles the batch's CAs in order, then, on a full resync,
// every CA it keeps, has to fetch again or an import_ca item names. It
// runs TrustUpdateCmd once when TrustDir changed and records in ap what
// changed; failures are joined, the other CAs still handled.
func (a *Agent) applyCAs(ctx context.Context, cfg *installConfig, b *batch, ap *applied) error {
	ops := slices.Clone(b.cas)
	seen := map[int64]bool{}
	for _, op := range ops {
		seen[op.id] = true
	}
	var errs []error
	if b.full {
		ids := append(a.keptCAs(), a.st.PendingCAs...)
		for _, it := range cfg.Installs {
			if err := it.badImportCA(); err != nil {
				errs = append(errs, err)
			} else if it.enabled() && it.Type == "import_ca" {
				ids = append(ids, int64(it.ObID))
			}
		}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				ops = append(ops, caOp{id: id, resync: true})
			}
		}
	}
	pending := slices.Clone(a.st.PendingCAs)
	trust := false
	for _, op := range ops {
		var t bool
		var err error
		if op.remove {
			t, err = a.removeCA(op.id, ap)
		} else {
			t, err = a.importCA(ctx, cfg, op, ap)
		}
		trust = trust || t
		if err != nil {
			errs = append(errs, err)
		}
	}
	if trust && a.TrustUpdateCmd != "" {
		if err := a.runCommand(ctx, "trust update command", []string{"/bin/sh", "-c", a.TrustUpdateCmd}, os.Environ(), a.scriptTimeout()); err != nil {
			errs = append(errs, err)
		} else {
			a.printf("ran the trust update command")
		}
	}
	if !slices.Equal(a.st.PendingCAs, pending) {
		if err := a.saveState(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// importCA fetches the CA's bundle, keeps it in cas/<id>/, writes it to
// TrustDir as certfleet-ca-<id>.crt and applies the import_ca items for
// it. A CA that is not assigned (404) or refused (403) is reported and
// done with, except that a resync removes a CA the agent kept; one the
// server cannot serve now is fetched again on the next poll. It reports
// whether TrustDir changed.
func (a *Agent) importCA(ctx context.Context, cfg *installConfig, op caOp, ap *applied) (bool, error) {
	id := op.id
	bundle, err := a.fetchCA(ctx, id)
	if errors.Is(err, errCALater) {
		if !slices.Contains(a.st.PendingCAs, id) {
			a.st.PendingCAs = append(a.st.PendingCAs, id)
		}
		a.printf("CA %d: the server cannot serve it now (%v); fetching it again on the next poll", id, err)
		return false, nil
	}
	a.dropPending(id)
	switch {
	case errors.Is(err, errCAGone) && op.resync && slices.Contains(a.keptCAs(), id):
		a.printf("CA %d is no longer assigned to this device", id)
		return a.removeCA(id, ap)
	case errors.Is(err, errCAGone), errors.Is(err, errCARefused):
		a.printf("CA %d: nothing imported (%v)", id, err)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("CA %d: %w", id, err)
	}
	files, err := caFiles(id, bundle)
	if err != nil {
		return false, err
	}
	name := bundle.Name
	if name == "" {
		name = "CA " + strconv.FormatInt(id, 10)
	}
	kept := false
	for _, f := range []string{"ca.pem", "meta.json"} {
		did, err := writeFileAtomic(filepath.Join(a.caDir(id), f), files[f].data, files[f].mode)
		if err != nil {
			return false, fmt.Errorf("keep CA %d: %w", id, err)
		}
		kept = kept || did
	}
	if kept {
		ap.cas[id] = true
		a.printf("kept CA %d (%s) in %s", id, name, a.caDir(id))
	}
	trust := false
	if a.TrustDir != "" {
		did, err := writeFileAtomic(a.trustFile(id), files["ca.pem"].data, 0o644)
		if err != nil {
			return false, fmt.Errorf("import CA %d into %s: %w", id, a.TrustDir, err)
		}
		if did {
			trust = true
			ap.files++
			ap.cas[id] = true
			a.printf("imported CA %d (%s) to %s", id, name, a.trustFile(id))
		} else {
			a.printf("CA %d at %s is up to date", id, a.trustFile(id))
		}
	}
	for _, it := range cfg.Installs {
		if !it.importsCA(id) {
			continue
		}
		n, err := a.copyFiles(it, files, fmt.Sprintf("CA %d", id))
		ap.files += n
		if n > 0 {
			ap.cas[id] = true
		}
		if err != nil {
			return trust, err
		}
	}
	return trust, nil
}

// removeCA takes an unassigned CA out of TrustDir and the state
// directory; files import_ca items installed stay. It reports whether
// TrustDir changed.
func (a *Agent) removeCA(caID int64, ap *applied) (bool, error) {
	a.dropPending(caID)
	trust := false
	if a.TrustDir != "" {
		switch err := os.Remove(a.trustFile(caID)); {
		case err == nil:
			trust = true
			ap.cas[caID] = true
			a.printf("removed CA %d from %s", caID, a.trustFile(caID))
		case !errors.Is(err, os.ErrNotExist):
			return false, fmt.Errorf("remove CA %d from %s: %w", caID, a.TrustDir, err)
		}
	}
	if _, err := os.Stat(a.caDir(caID)); err == nil {
		ap.cas[caID] = true
	}
	if err := os.RemoveAll(a.caDir(caID)); err != nil {
		return trust, fmt.Errorf("forget CA %d: %w", caID, err)
	}
	a.printf("CA %d was unassigned; its installed files are left in place", caID)
	return trust, nil
}

func (a *Agent) dropPending(caID int64) {
	a.st.PendingCAs = slices.DeleteFunc(a.st.PendingCAs, func(id int64) bool { return id == caID })
}
