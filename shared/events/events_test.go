package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/events"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

func TestLogOrderCursorAndOwnership(t *testing.T) {
	p := testenv.New(t)
	ctx := context.Background()
	log := events.New(p.Store)
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for i, typ := range []string{events.Issued, events.Renewed, events.Failed, events.Revoked} {
		if err := log.Append(ctx, events.Event{Type: typ, UserID: 1, CertID: 5, IssueID: int64(i + 1), At: base.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := log.Append(ctx, events.Event{Type: events.Issued, UserID: 2, CertID: 9, IssueID: 9, At: base}); err != nil {
		t.Fatal(err)
	}
	all, err := log.After(ctx, 1, "", 0)
	if err != nil || len(all) != 4 {
		t.Fatalf("user 1's log = %d events, %v", len(all), err)
	}
	for i, want := range []string{events.Issued, events.Renewed, events.Failed, events.Revoked} {
		if all[i].Type != want || all[i].UserID != 1 {
			t.Errorf("event %d = %s of user %d, want %s", i, all[i].Type, all[i].UserID, want)
		}
	}
	rest, err := log.After(ctx, 1, all[1].ID, 0)
	if err != nil || len(rest) != 2 || rest[0].ID != all[2].ID {
		t.Fatalf("after the second = %+v, %v", rest, err)
	}
	if none, err := log.After(ctx, 1, all[3].ID, 0); err != nil || len(none) != 0 {
		t.Errorf("after the last = %+v, %v", none, err)
	}
	if other, _ := log.After(ctx, 2, "", 0); len(other) != 1 || other[0].CertID != 9 {
		t.Errorf("user 2's log = %+v", other)
	}
}

func TestWriteIsOncePerChange(t *testing.T) {
	p := testenv.New(t)
	ctx := context.Background()
	ev := events.Event{Type: events.Issued, UserID: 1, CertID: 1, IssueID: 1, At: time.Now()}
	w, err := events.Write(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Store.Transact(ctx, []store.Write{w}); err != nil {
		t.Fatal(err)
	}
	if err := p.Store.Transact(ctx, []store.Write{w}); !errors.Is(err, store.ErrConditionFailed) {
		t.Errorf("the same event twice: %v, want a condition failure", err)
	}
	if it, err := p.Store.Get(ctx, w.Item.Key); err != nil || it.ExpiresAt.IsZero() {
		t.Errorf("stored event = %+v, %v; want one that expires", it, err)
	}
}
