package devices_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
)

// Scenario 13: assigning an issued certificate wraps its key for the
// device and signals cert.updated with wrap_ready; the materials decrypt
// with the device's key to the certificate's key.
func TestAssignIssuedCertificate(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	k := newWrapKey(t, "web.example")
	r.certs.put(1, devices.CertInfo{ID: 7, Policy: devices.PolicyHybrid})
	r.certs.issue(1, 7, 70, k)

	as, created, err := r.as.Assign(ctx, 1, a.dev.ID, 7)
	if err != nil || !created || as.WrapIssueID != 70 || len(as.EncDataKey) != 80 {
		t.Fatalf("Assign = %+v, %v, %v", as, created, err)
	}
	sigs := r.sig.take()
	fp := base64.StdEncoding.EncodeToString(devices.KeyFingerprint(a.pk[:]))
	if len(sigs) != 1 || sigs[0].Type != devices.SignalCertUpdated || sigs[0].DeviceID != a.dev.ID || sigs[0].UserID != 1 ||
		sigs[0].Ref["cert_id"] != int64(7) || sigs[0].Ref["wrap_ready"] != true || sigs[0].Ref["device_keyfp_b64"] != fp {
		t.Fatalf("assignSignals %+v", sigs)
	}
	k.matches(t, r.open(t, 1, a, 7))

	// The store layout: both directions in the user's partition.
	for _, sk := range []string{"assign#dev#0000000000000000001#cert#0000000000000000007", "assign#cert#0000000000000000007#dev#0000000000000000001"} {
		if _, err := r.p.Store.Get(ctx, assignStoreKey("user#1", sk)); err != nil {
			t.Errorf("%s: %v", sk, err)
		}
	}
	if ids, err := r.as.AssignedCertificates(ctx, 1, a.dev.ID); err != nil || len(ids) != 1 || ids[0] != 7 {
		t.Fatalf("AssignedCertificates = %v, %v", ids, err)
	}
	if ids, err := r.as.DevicesOf(ctx, 1, 7); err != nil || len(ids) != 1 || ids[0] != a.dev.ID {
		t.Fatalf("DevicesOf = %v, %v", ids, err)
	}
	// Assigning again keeps the wrap and signals again.
	again, created, err := r.as.Assign(ctx, 1, a.dev.ID, 7)
	if err != nil || created || !bytes.Equal(again.EncDataKey, as.EncDataKey) || len(r.sig.take()) != 1 {
		t.Fatalf("Assign again = %+v, %v, %v", again, created, err)
	}
	// DEVICE_REQUIRED is wrapped the same way.
	k2 := newWrapKey(t, "dr.example")
	r.certs.put(1, devices.CertInfo{ID: 8, Policy: devices.PolicyDeviceRequired})
	r.certs.issue(1, 8, 80, k2)
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 8); err != nil {
		t.Fatal(err)
	}
	k2.matches(t, r.open(t, 1, a, 8))
}

// Scenario 14: a certificate assigned before it is issued is pending
// until Rewrap, which signals wrap_ready.
func TestWrapPendingUntilRewrap(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	r.certs.put(1, devices.CertInfo{ID: 7})
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || sigs[0].Ref["wrap_ready"] != false {
		t.Fatalf("assignSignals %+v", sigs)
	}
	_, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Conflict, devices.ReasonWrapPending)
	// Issued, but not wrapped yet: still pending (a GET never wraps).
	k := newWrapKey(t, "later.example")
	r.certs.issue(1, 7, 71, k)
	_, err = r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Conflict, devices.ReasonWrapPending)
	if err := r.as.Rewrap(ctx, 1, 7); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || sigs[0].Type != devices.SignalCertUpdated || sigs[0].Ref["wrap_ready"] != true {
		t.Fatalf("assignSignals after Rewrap %+v", sigs)
	}
	k.matches(t, r.open(t, 1, a, 7))
}

// Scenario 15: MASTER_ONLY hands out the key in the clear only with
// server_decrypt_export.
func TestMasterOnly(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	r.certs.put(1, devices.CertInfo{ID: 7, Policy: devices.PolicyMasterOnly, ServerDecryptExport: true})
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	_, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Conflict, devices.ReasonNotIssued)
	k := newWrapKey(t, "master.example")
	r.certs.issue(1, 7, 70, k)
	m, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	if err != nil || m.Scheme != devices.SchemePlaintext || m.IssueID != 70 {
		t.Fatalf("Materials = %+v, %v", m.Scheme, err)
	}
	k.matches(t, m.PrivateKeyDER)
	// No wrap is made for MASTER_ONLY.
	if as, err := r.as.Get(ctx, 1, a.dev.ID, 7); err != nil || as.EncDataKey != nil {
		t.Fatalf("assignment %+v, %v", as, err)
	}

	r.certs.put(1, devices.CertInfo{ID: 8, Policy: devices.PolicyMasterOnly})
	r.certs.issue(1, 8, 80, k)
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 8); err != nil {
		t.Fatal(err)
	}
	_, err = r.as.Materials(ctx, 1, a.dev.ID, 8)
	assignWantErr(t, err, apperr.Forbidden, devices.ReasonExportForbidden)
}

// Scenario 16: a renewal's new key reaches every assigned device after
// Rewrap; until then the devices are pending, never served the old key.
func TestRenewalRewrapsEveryDevice(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	b := r.register(t, 1, "22222222-2222-2222-2222-222222222222")
	k1 := newWrapKey(t, "renew.example")
	r.certs.put(1, devices.CertInfo{ID: 7})
	r.certs.issue(1, 7, 70, k1)
	for _, d := range []assignAgent{a, b} {
		if _, _, err := r.as.Assign(ctx, 1, d.dev.ID, 7); err != nil {
			t.Fatal(err)
		}
		k1.matches(t, r.open(t, 1, d, 7))
	}
	r.sig.take()

	k2 := newWrapKey(t, "renew.example")
	r.certs.issue(1, 7, 71, k2)
	_, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Conflict, devices.ReasonWrapPending)
	if err := r.as.Rewrap(ctx, 1, 7); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 2 || sigs[0].Ref["wrap_ready"] != true || sigs[1].Ref["wrap_ready"] != true {
		t.Fatalf("assignSignals %+v", sigs)
	}
	for _, d := range []assignAgent{a, b} {
		k2.matches(t, r.open(t, 1, d, 7))
	}
	// Both devices share the new data key's material; the old is gone.
	if _, err := r.p.Store.Get(ctx, assignStoreKey("user#1", "wrap#cert#0000000000000000007#issue#0000000000000000070")); err == nil {
		t.Error("the first issue's wrap is still stored")
	}
	if _, err := r.p.Store.Get(ctx, assignStoreKey("user#1", "wrap#cert#0000000000000000007#issue#0000000000000000071")); err != nil {
		t.Errorf("the renewal's wrap: %v", err)
	}
	// Rewrap again is harmless.
	if err := r.as.Rewrap(ctx, 1, 7); err != nil {
		t.Fatal(err)
	}
	k2.matches(t, r.open(t, 1, a, 7))
}

// A device that registers a new key is pending until RewrapDevice.
func TestNewDeviceKeyNeedsRewrapDevice(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	k := newWrapKey(t, "rekey.example")
	r.certs.put(1, devices.CertInfo{ID: 7})
	r.certs.issue(1, 7, 70, k)
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	a2 := r.register(t, 1, "11111111-1111-1111-1111-111111111111") // a new auth cycle, new key
	if a2.dev.ID != a.dev.ID {
		t.Fatal("re-registration made a new device")
	}
	_, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Conflict, devices.ReasonWrapPending)
	r.sig.take()
	if err := r.as.RewrapDevice(ctx, 1, a.dev.ID); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || sigs[0].Ref["wrap_ready"] != true {
		t.Fatalf("assignSignals %+v", sigs)
	}
	k.matches(t, r.open(t, 1, a2, 7))
}

// Scenario 17: unassigning signals cert.unassigned; the materials are
// then not found.
func TestUnassign(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	k := newWrapKey(t, "gone.example")
	r.certs.put(1, devices.CertInfo{ID: 7})
	r.certs.issue(1, 7, 70, k)
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	r.sig.take()
	if err := r.as.Unassign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || sigs[0].Type != devices.SignalCertUnassigned || sigs[0].Ref["cert_id"] != int64(7) {
		t.Fatalf("assignSignals %+v", sigs)
	}
	_, err := r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.NotFound, "")
	if ok, err := r.as.IsAssigned(ctx, 1, a.dev.ID, 7); ok || err != nil {
		t.Fatalf("IsAssigned = %v, %v", ok, err)
	}
	if ids, _ := r.as.DevicesOf(ctx, 1, 7); len(ids) != 0 {
		t.Fatalf("DevicesOf = %v", ids)
	}
	assignWantErr(t, r.as.Unassign(ctx, 1, a.dev.ID, 7), apperr.NotFound, "")
	if err := r.as.Rewrap(ctx, 1, 7); err != nil || len(r.sig.take()) != 0 {
		t.Fatalf("Rewrap of an unassigned certificate: %v", err)
	}
}

// A user reaches only their own devices and certificates; a device only
// the certificates assigned to it; a deleted device nothing.
func TestAssignmentIsolation(t *testing.T) {
	r, ctx := newAssignRig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	b := r.register(t, 2, "22222222-2222-2222-2222-222222222222")
	k := newWrapKey(t, "a.example")
	r.certs.put(1, devices.CertInfo{ID: 7})
	r.certs.issue(1, 7, 70, k)
	r.certs.put(2, devices.CertInfo{ID: 9})
	if _, _, err := r.as.Assign(ctx, 1, a.dev.ID, 7); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, device, cert int64
	}{{2, a.dev.ID, 7}, {2, b.dev.ID, 7}, {2, a.dev.ID, 9}, {1, b.dev.ID, 7}, {1, a.dev.ID, 9}} {
		_, _, err := r.as.Assign(ctx, c.user, c.device, c.cert)
		assignWantErr(t, err, apperr.NotFound, "")
	}
	// Device B (user 2) asking for A's certificate: not assigned to it.
	_, err := r.as.Materials(ctx, 2, b.dev.ID, 7)
	assignWantErr(t, err, apperr.NotFound, "")
	// A token naming user 2 with A's device: no such device of user 2.
	_, err = r.as.Materials(ctx, 2, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Forbidden, "")
	if ids, _ := r.as.DevicesOf(ctx, 2, 7); len(ids) != 0 {
		t.Fatalf("user 2 sees devices of user 1's certificate: %v", ids)
	}
	if err := r.reg.Delete(ctx, 1, a.dev.ID); err != nil {
		t.Fatal(err)
	}
	_, err = r.as.Materials(ctx, 1, a.dev.ID, 7)
	assignWantErr(t, err, apperr.Forbidden, "")
	if err := r.as.ForgetDevice(ctx, 1, a.dev.ID); err != nil {
		t.Fatal(err)
	}
	if ids, _ := r.as.DevicesOf(ctx, 1, 7); len(ids) != 0 {
		t.Fatalf("a forgotten device is still assigned: %v", ids)
	}
}
