package devices_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"testing"

	"golang.org/x/crypto/blake2b"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/internal/testenv"
)

// revoked records RevokeDevice calls.
type revoked struct {
	mu  sync.Mutex
	ids []int64
}

func (r *revoked) RevokeDevice(_ context.Context, id int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	return nil
}

func newKey(t *testing.T) ([]byte, string) {
	t.Helper()
	pk := make([]byte, 32)
	if _, err := rand.Read(pk); err != nil {
		t.Fatal(err)
	}
	return pk, base64.StdEncoding.EncodeToString(pk)
}

const publicID = "3d96fbe3-2f11-4061-bfae-27e0e6c5d023"

func TestRegisterUpsertsPerUserAndPublicID(t *testing.T) {
	p := testenv.New(t)
	ctx := context.Background()
	rev := &revoked{}
	svc := devices.New(p.Store, rev, devices.Config{})
	pk, pkB64 := newKey(t)
	d, created, err := svc.Register(ctx, 1, devices.Registration{PublicID: publicID, PublicKeyB64: pkB64, Name: "CLI Device web1",
		Platform: "linux", AppVersion: "1.4.2", UserAgent: "cert-ctrl/1.4.2"})
	if err != nil || !created {
		t.Fatalf("Register = %+v, %v, %v", d, created, err)
	}
	want := blake2b.Sum256(pk)
	if d.ID == 0 || d.Status != devices.StatusActive || string(d.KeyFP) != string(want[:]) || d.PublicID != publicID {
		t.Fatalf("device %+v", d)
	}
	// A new auth cycle of the same agent updates the same device.
	_, pk2 := newKey(t)
	again, created, err := svc.Register(ctx, 1, devices.Registration{PublicID: publicID, PublicKeyB64: pk2, AppVersion: "1.5.0"})
	if err != nil || created || again.ID != d.ID || again.AppVersion != "1.5.0" || string(again.KeyFP) == string(d.KeyFP) {
		t.Fatalf("re-registration = %+v, %v, %v", again, created, err)
	}
	// The same public id of another user is another device.
	other, created, err := svc.Register(ctx, 2, devices.Registration{PublicID: publicID, PublicKeyB64: pkB64})
	if err != nil || !created || other.ID == d.ID {
		t.Fatalf("other user's device = %+v, %v, %v", other, created, err)
	}
	list, total, err := svc.List(ctx, 1, 0, 0)
	if err != nil || total != 1 || len(list) != 1 || list[0].ID != d.ID {
		t.Fatalf("user 1's devices: %d %+v %v", total, list, err)
	}
	if got, err := svc.ByPublicID(ctx, 1, "3D96FBE3-2F11-4061-BFAE-27E0E6C5D023"); err != nil || got.ID != d.ID {
		t.Fatalf("by public id: %+v %v", got, err)
	}
	if _, err := svc.Get(ctx, 2, d.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("user 2 reads user 1's device: %v", err)
	}
	if err := svc.Delete(ctx, 2, d.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("user 2 deletes user 1's device: %v", err)
	}
	if err := svc.Delete(ctx, 1, d.ID); err != nil {
		t.Fatal(err)
	}
	if len(rev.ids) != 1 || rev.ids[0] != d.ID {
		t.Fatalf("revoked %v", rev.ids)
	}
	if _, err := svc.ByPublicID(ctx, 1, publicID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("after delete: %v", err)
	}
	// Registering again after a delete is a new device.
	if d3, created, err := svc.Register(ctx, 1, devices.Registration{PublicID: publicID, PublicKeyB64: pkB64}); err != nil || !created || d3.ID == d.ID {
		t.Fatalf("after delete, register = %+v %v %v", d3, created, err)
	}
}

func TestRegisterRejects(t *testing.T) {
	p := testenv.New(t)
	svc := devices.New(p.Store, &revoked{}, devices.Config{})
	_, pkB64 := newKey(t)
	for _, c := range []struct {
		reg   devices.Registration
		field string
	}{
		{devices.Registration{PublicID: "not-an-id", PublicKeyB64: pkB64}, "device_public_id"},
		{devices.Registration{PublicID: publicID}, "dev_pk"},
		{devices.Registration{PublicID: publicID, PublicKeyB64: base64.StdEncoding.EncodeToString(make([]byte, 31))}, "dev_pk"},
		{devices.Registration{PublicID: publicID, PublicKeyB64: "***"}, "dev_pk"},
		{devices.Registration{PublicID: publicID, PublicKeyB64: pkB64, Name: string(make([]byte, 300))}, "name"},
	} {
		_, _, err := svc.Register(context.Background(), 1, c.reg)
		var e *apperr.Error
		if apperr.CodeOf(err) != apperr.Invalid || !asErr(err, &e) || e.Field != c.field {
			t.Errorf("%+v: %v, want Invalid on %s", c.reg, err, c.field)
		}
	}
}

func asErr(err error, e **apperr.Error) bool {
	var ae *apperr.Error
	ok := errors.As(err, &ae)
	*e = ae
	return ok
}

func TestConcurrentRegistrationsMakeOneDevice(t *testing.T) {
	p := testenv.New(t)
	svc := devices.New(p.Store, &revoked{}, devices.Config{MaxPerUser: 3})
	_, pkB64 := newKey(t)
	var wg sync.WaitGroup
	ids := make(chan int64, 16)
	for range 16 {
		wg.Go(func() {
			d, _, err := svc.Register(context.Background(), 1, devices.Registration{PublicID: publicID, PublicKeyB64: pkB64})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- d.ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		seen[id] = true
	}
	if _, total, _ := svc.List(context.Background(), 1, 0, 0); len(seen) != 1 || total != 1 {
		t.Fatalf("16 concurrent registrations of one public id made devices %v (%d listed)", seen, total)
	}
	// The count was given back by the losers: two more fit, a third not.
	for i, id := range []string{"00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"} {
		if _, _, err := svc.Register(context.Background(), 1, devices.Registration{PublicID: id, PublicKeyB64: pkB64}); err != nil {
			t.Fatalf("device %d: %v", i+2, err)
		}
	}
	if _, _, err := svc.Register(context.Background(), 1, devices.Registration{PublicID: "00000000-0000-0000-0000-000000000003", PublicKeyB64: pkB64}); apperr.CodeOf(err) != apperr.Conflict {
		t.Fatalf("a fourth device over MaxPerUser 3: %v", err)
	}
}
