package devices_test

import (
	"context"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/devices"
)

// caRig is the assignment rig with the real private CA service, whose
// deletes take CAs off devices.
type caRig struct {
	*assignRig
	cas  *cas.Service
	assc *devices.CAAssociations
}

func newCARig(t *testing.T) *caRig {
	r := &caRig{assignRig: newAssignRig(t)}
	r.cas = cas.New(r.p.Store, r.p.Sealer, cas.Config{OnDelete: func(ctx context.Context, userID, caID int64) error {
		return r.assc.ForgetCA(ctx, userID, caID)
	}})
	r.assc = devices.NewCAAssociations(r.reg, r.cas, r.sig)
	return r
}

func (r *caRig) newCA(t *testing.T, userID int64, name string) cas.CA {
	t.Helper()
	ca, err := r.cas.Create(context.Background(), userID, cas.NewCA{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// wantCASignal checks the recorded signals are one of typ for the CA.
func (r *caRig) wantCASignal(t *testing.T, typ string, deviceID int64, ca cas.CA) {
	t.Helper()
	sigs := r.sig.take()
	if len(sigs) != 1 || sigs[0].Type != typ || sigs[0].DeviceID != deviceID || sigs[0].Ref["ca_id"] != ca.ID ||
		sigs[0].Ref["ca_name"] != ca.Name || sigs[0].Ref["serial"] != ca.SerialNumber {
		t.Fatalf("signals %+v; want one %s of CA %d on device %d", sigs, typ, ca.ID, deviceID)
	}
}

// Scenario 18 at the service: associating a CA signals ca.assigned and
// its bundle is the CA certificate; an inactive CA's bundle is refused;
// dissociating signals ca.unassigned and the bundle is gone.
func TestCAAssociateBundleDissociate(t *testing.T) {
	r, ctx := newCARig(t), context.Background()
	dev := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	ca := r.newCA(t, 1, "Lab root")

	as, created, err := r.assc.Associate(ctx, 1, dev.dev.ID, ca.ID)
	if err != nil || !created || as.CAID != ca.ID || as.CAName != "Lab root" || as.Serial != ca.SerialNumber {
		t.Fatalf("Associate = %+v, %v, %v", as, created, err)
	}
	r.wantCASignal(t, devices.SignalCAAssigned, dev.dev.ID, ca)
	if _, created, err := r.assc.Associate(ctx, 1, dev.dev.ID, ca.ID); err != nil || created {
		t.Fatalf("Associate again = %v, %v", created, err)
	}
	r.wantCASignal(t, devices.SignalCAAssigned, dev.dev.ID, ca)
	if list, err := r.assc.List(ctx, 1, dev.dev.ID); err != nil || len(list) != 1 || list[0].CAID != ca.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
	b, err := r.assc.Bundle(ctx, 1, dev.dev.ID, ca.ID)
	if err != nil || b.CertificatePEM != ca.CertificatePEM {
		t.Fatalf("Bundle = %+v, %v", b, err)
	}

	inactive, active := cas.StatusInactive, cas.StatusActive
	if _, err := r.cas.Update(ctx, 1, ca.ID, cas.Changes{Status: &inactive}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.assc.Bundle(ctx, 1, dev.dev.ID, ca.ID); apperr.CodeOf(err) != apperr.Forbidden {
		t.Fatalf("Bundle of an inactive CA = %v", err)
	}
	if _, err := r.cas.Update(ctx, 1, ca.ID, cas.Changes{Status: &active}); err != nil {
		t.Fatal(err)
	}

	if err := r.assc.Dissociate(ctx, 1, dev.dev.ID, ca.ID); err != nil {
		t.Fatal(err)
	}
	r.wantCASignal(t, devices.SignalCAUnassigned, dev.dev.ID, ca)
	if _, err := r.assc.Bundle(ctx, 1, dev.dev.ID, ca.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("Bundle after Dissociate = %v", err)
	}
	if err := r.assc.Dissociate(ctx, 1, dev.dev.ID, ca.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("Dissociate again = %v", err)
	}
	if sigs := r.sig.take(); len(sigs) != 0 {
		t.Fatalf("a refused dissociation signalled %+v", sigs)
	}
}

// A user reaches only their own devices and CAs.
func TestCAAssociationOwnership(t *testing.T) {
	r, ctx := newCARig(t), context.Background()
	mine := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	theirs := r.register(t, 2, "22222222-2222-2222-2222-222222222222")
	myCA, theirCA := r.newCA(t, 1, "mine"), r.newCA(t, 2, "theirs")
	for _, c := range []struct{ device, ca int64 }{{mine.dev.ID, theirCA.ID}, {theirs.dev.ID, myCA.ID}} {
		if _, _, err := r.assc.Associate(ctx, 1, c.device, c.ca); apperr.CodeOf(err) != apperr.NotFound {
			t.Fatalf("Associate device %d CA %d = %v", c.device, c.ca, err)
		}
	}
	if _, _, err := r.assc.Associate(ctx, 2, theirs.dev.ID, theirCA.ID); err != nil {
		t.Fatal(err)
	}
	r.sig.take()
	if _, err := r.assc.Bundle(ctx, 1, theirs.dev.ID, theirCA.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("Bundle of another user's = %v", err)
	}
	if err := r.assc.Dissociate(ctx, 1, theirs.dev.ID, theirCA.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("Dissociate another user's = %v", err)
	}
	if _, err := r.assc.Bundle(ctx, 2, theirs.dev.ID, theirCA.ID); err != nil {
		t.Fatalf("the owner's bundle after the attempts: %v", err)
	}
}

// Deleting a CA takes it off every device (ca.unassigned to each); a
// deleted device's associations are forgotten without signals.
func TestCADeleteAndDeviceForget(t *testing.T) {
	r, ctx := newCARig(t), context.Background()
	a := r.register(t, 1, "11111111-1111-1111-1111-111111111111")
	b := r.register(t, 1, "22222222-2222-2222-2222-222222222222")
	ca, kept := r.newCA(t, 1, "root"), r.newCA(t, 1, "kept")
	for _, d := range []int64{a.dev.ID, b.dev.ID} {
		for _, c := range []int64{ca.ID, kept.ID} {
			if _, _, err := r.assc.Associate(ctx, 1, d, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.sig.take()
	if err := r.cas.Delete(ctx, 1, ca.ID); err != nil {
		t.Fatal(err)
	}
	sigs := r.sig.take()
	told := map[int64]bool{}
	for _, s := range sigs {
		if s.Type == devices.SignalCAUnassigned && s.Ref["ca_id"] == ca.ID {
			told[s.DeviceID] = true
		}
	}
	if len(sigs) != 2 || !told[a.dev.ID] || !told[b.dev.ID] {
		t.Fatalf("signals on delete %+v", sigs)
	}
	for _, d := range []int64{a.dev.ID, b.dev.ID} {
		list, err := r.assc.List(ctx, 1, d)
		if err != nil || len(list) != 1 || list[0].CAID != kept.ID {
			t.Fatalf("device %d after the delete: %+v, %v", d, list, err)
		}
	}

	if err := r.assc.ForgetDevice(ctx, 1, a.dev.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := r.assc.List(ctx, 1, a.dev.ID); len(list) != 0 {
		t.Fatalf("forgotten device still has %+v", list)
	}
	if sigs := r.sig.take(); len(sigs) != 0 {
		t.Fatalf("ForgetDevice signalled %+v", sigs)
	}
	// The CA's reverse items went with the device's: deleting it now
	// tells only the device that remains.
	if err := r.cas.Delete(ctx, 1, kept.ID); err != nil {
		t.Fatal(err)
	}
	if sigs := r.sig.take(); len(sigs) != 1 || sigs[0].DeviceID != b.dev.ID {
		t.Fatalf("signals %+v; want one to device %d", sigs, b.dev.ID)
	}
}

// Associations racing a CA's deletion never outlive it: each either
// fails or is taken off by the delete.
func TestCAAssociateRacesDelete(t *testing.T) {
	r, ctx := newCARig(t), context.Background()
	var devs []int64
	for _, id := range []string{"11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
		"33333333-3333-3333-3333-333333333333", "44444444-4444-4444-4444-444444444444"} {
		devs = append(devs, r.register(t, 1, id).dev.ID)
	}
	for round := range 10 {
		ca := r.newCA(t, 1, "racing")
		var wg sync.WaitGroup
		for _, d := range devs {
			wg.Go(func() {
				_, _, err := r.assc.Associate(ctx, 1, d, ca.ID)
				if err != nil && apperr.CodeOf(err) != apperr.NotFound && apperr.CodeOf(err) != apperr.Conflict {
					t.Errorf("Associate: %v", err)
				}
			})
		}
		wg.Go(func() {
			if err := r.cas.Delete(ctx, 1, ca.ID); err != nil {
				t.Errorf("Delete: %v", err)
			}
		})
		wg.Wait()
		for _, d := range devs {
			if _, err := r.assc.Get(ctx, 1, d, ca.ID); apperr.CodeOf(err) != apperr.NotFound {
				t.Fatalf("round %d: device %d still has deleted CA %d (%v)", round, d, ca.ID, err)
			}
		}
	}
}
