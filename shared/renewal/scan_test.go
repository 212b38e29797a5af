package renewal_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/renewal"
)

type fakeDue struct {
	list      []certs.Due
	err       error
	now       time.Time
	limit     int
	callCount int
}

func (f *fakeDue) Due(_ context.Context, now time.Time, limit int) ([]certs.Due, error) {
	f.callCount++
	f.now, f.limit = now, limit
	return f.list, f.err
}

type fakeStarter struct {
	errs   map[int64]error // by certificate id
	called []int64
	cancel context.CancelFunc // called after the certificate cancelAt
	at     int64
}

func (f *fakeStarter) Renew(_ context.Context, userID, certID int64) error {
	if userID != certID*10 {
		return errors.New("wrong user for the certificate")
	}
	f.called = append(f.called, certID)
	if f.cancel != nil && certID == f.at {
		f.cancel()
	}
	return f.errs[certID]
}

func dueList(ids ...int64) []certs.Due {
	var out []certs.Due
	for _, id := range ids {
		out = append(out, certs.Due{UserID: id * 10, CertID: id, RenewAt: time.Unix(id, 0)})
	}
	return out
}

func TestScan(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	boom := errors.New("queue down")
	due := &fakeDue{list: dueList(1, 2, 3, 4, 5, 6)}
	st := &fakeStarter{errs: map[int64]error{
		2: apperr.New(apperr.Conflict, "an issue is already active"),
		3: boom,
		5: apperr.New(apperr.NotFound, "certificate gone"),
	}}
	started, err := renewal.Scan(context.Background(), due, st, now, 50)
	if started != 3 {
		t.Errorf("started %d, want 3 (1, 4, 6)", started)
	}
	if !reflect.DeepEqual(st.called, []int64{1, 2, 3, 4, 5, 6}) {
		t.Errorf("Renew called for %v, want every due certificate in order", st.called)
	}
	if !due.now.Equal(now) || due.limit != 50 {
		t.Errorf("Due asked with now %s, limit %d", due.now, due.limit)
	}
	var se *renewal.ScanError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a *ScanError", err)
	}
	t.Log(err)
	if want := (renewal.ScanError{Due: 6, Started: 3, Active: 1, Failed: 2}); se.Due != want.Due || se.Started != want.Started || se.Active != want.Active || se.Failed != want.Failed {
		t.Errorf("ScanError %+v, want %+v", *se, want)
	}
	if !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the first failure", err)
	}
}

func TestScanConflictIsNoFailure(t *testing.T) {
	st := &fakeStarter{errs: map[int64]error{1: apperr.New(apperr.Conflict, "active"), 2: apperr.New(apperr.Conflict, "active")}}
	started, err := renewal.Scan(context.Background(), &fakeDue{list: dueList(1, 2, 3)}, st, time.Now(), 0)
	if started != 1 || err != nil {
		t.Errorf("Scan = %d, %v; want 1, nil", started, err)
	}
}

func TestScanNothingDue(t *testing.T) {
	due := &fakeDue{}
	started, err := renewal.Scan(context.Background(), due, &fakeStarter{}, time.Now(), 0)
	if started != 0 || err != nil || due.callCount != 1 {
		t.Errorf("Scan = %d, %v (Due called %d times); want 0, nil, 1", started, err, due.callCount)
	}
}

func TestScanDueFails(t *testing.T) {
	boom := errors.New("store down")
	st := &fakeStarter{}
	started, err := renewal.Scan(context.Background(), &fakeDue{list: dueList(1), err: boom}, st, time.Now(), 0)
	if started != 0 || !errors.Is(err, boom) || len(st.called) != 0 {
		t.Errorf("Scan = %d, %v (Renew called for %v); want 0 and the source's error", started, err, st.called)
	}
}

func TestScanStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &fakeStarter{cancel: cancel, at: 2}
	started, err := renewal.Scan(ctx, &fakeDue{list: dueList(1, 2, 3, 4)}, st, time.Now(), 0)
	if started != 2 || !errors.Is(err, context.Canceled) {
		t.Errorf("Scan = %d, %v; want 2 and context.Canceled", started, err)
	}
	if !reflect.DeepEqual(st.called, []int64{1, 2}) {
		t.Errorf("Renew called for %v, want [1 2]", st.called)
	}
}
