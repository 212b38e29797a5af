package local_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/queue/local"
	"github.com/certfleet/certfleet/shared/queue/queuetest"
)

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, queuetest.Guarantees{ExclusiveDelivery: true}, func(t *testing.T, c queuetest.Config) queue.Queue {
		db := openDB(t, filepath.Join(t.TempDir(), "certfleet.db"))
		t.Cleanup(func() { db.Close() })
		q, err := local.New(db, "work", local.Options{Visibility: c.Visibility, MaxReceiveCount: c.MaxReceiveCount})
		if err != nil {
			t.Fatal(err)
		}
		return q
	})
}

func TestNamesShareOneFile(t *testing.T) {
	ctx := t.Context()
	db := openDB(t, filepath.Join(t.TempDir(), "certfleet.db"))
	defer db.Close()
	a, err := local.New(db, "a", local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := local.New(db, "b", local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, queue.Message{Kind: "k", Body: []byte("for a")}, 0); err != nil {
		t.Fatal(err)
	}
	if ds, err := b.Receive(ctx, 10, 0); err != nil || len(ds) != 0 {
		t.Fatalf("queue b received %d, %v; want nothing", len(ds), err)
	}
	if ds, err := a.Receive(ctx, 10, 0); err != nil || len(ds) != 1 {
		t.Fatalf("queue a received %d, %v; want 1", len(ds), err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			if n := string(name); n != "queue/a" && n != "queue/b" {
				t.Errorf("unexpected top-level bucket %q", n)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a/b", "sp ace"} {
		if _, err := local.New(db, bad, local.Options{}); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	if _, err := local.New(db, "c", local.Options{MaxReceiveCount: -1}); err == nil {
		t.Error("New with MaxReceiveCount -1 succeeded")
	}
}

func TestRestart(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "certfleet.db")
	opts := local.Options{Visibility: time.Second, MaxReceiveCount: 1}

	db := openDB(t, path)
	q, err := local.New(db, "work", opts)
	if err != nil {
		t.Fatal(err)
	}
	inflight, err := q.Send(ctx, queue.Message{Kind: "order", Body: []byte("in flight")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 1 || ds[0].ID != inflight {
		t.Fatalf("Receive = %v, %v; want the in-flight message", ds, err)
	}
	oldReceipt := ds[0]
	waiting, err := q.Send(ctx, queue.Message{Kind: "check", Body: []byte("waiting")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	delayed, err := q.Send(ctx, queue.Message{Kind: "poll", Body: []byte("delayed")}, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Ping(ctx); err == nil {
		t.Error("Ping on a closed database succeeded")
	}

	db = openDB(t, path)
	defer db.Close()
	q, err = local.New(db, "work", opts)
	if err != nil {
		t.Fatal(err)
	}
	// Right after the restart only the waiting message is visible.
	ds, err = q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 1 || ds[0].ID != waiting || ds[0].Attempt != 1 || string(ds[0].Body) != "waiting" {
		t.Fatalf("first Receive after restart = %+v, %v; want only %s", ds, err, waiting)
	}
	if err := q.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	// The delayed message arrives once its delay (1.5s) has passed. By then
	// the in-flight message's visibility timeout (1s) has ended too, and as
	// it already used its single receive it goes to the dead list instead.
	got := map[string]queue.Delivery{}
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 1 && time.Now().Before(deadline) {
		ds, err := q.Receive(ctx, 10, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			got[d.ID] = d
		}
	}
	if d, ok := got[delayed]; !ok || d.Attempt != 1 || string(d.Body) != "delayed" {
		t.Fatalf("after restart got %+v; want the delayed message", got)
	}
	if _, ok := got[inflight]; ok {
		t.Fatal("the in-flight message was delivered beyond MaxReceiveCount")
	}
	dead, err := q.ListDead(ctx, 10)
	if err != nil || len(dead) != 1 || dead[0].ID != inflight {
		t.Fatalf("ListDead = %+v, %v; want the in-flight message", dead, err)
	}
	// A receipt from before the restart that has expired is ignored.
	if err := q.Ack(ctx, oldReceipt); err != nil {
		t.Fatalf("Ack of an expired receipt: %v", err)
	}
	if dead, _ := q.ListDead(ctx, 10); len(dead) != 1 {
		t.Fatalf("Ack of an expired receipt removed a dead message")
	}
	if err := q.Ack(ctx, queue.Delivery{Receipt: "garbage"}); !errors.Is(err, queue.ErrInvalid) {
		t.Errorf("Ack(malformed receipt) = %v, want ErrInvalid", err)
	}
}

func TestRestartKeepsInFlightMessage(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "certfleet.db")
	opts := local.Options{Visibility: time.Second, MaxReceiveCount: 5}
	db := openDB(t, path)
	q, err := local.New(db, "work", opts)
	if err != nil {
		t.Fatal(err)
	}
	id, err := q.Send(ctx, queue.Message{Kind: "order", Body: []byte("x")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if ds, err := q.Receive(ctx, 1, 0); err != nil || len(ds) != 1 {
		t.Fatalf("Receive = %v, %v", ds, err)
	}
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	q, err = local.New(db, "work", opts)
	if err != nil {
		t.Fatal(err)
	}
	if ds, err := q.Receive(ctx, 1, 0); err != nil || len(ds) != 0 {
		t.Fatalf("in-flight message visible right after restart: %v, %v", ds, err)
	}
	ds, err := q.Receive(ctx, 1, 3*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Receive after the visibility timeout = %v, %v", ds, err)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("redelivered after %s, within the visibility timeout", el)
	}
	if ds[0].ID != id || ds[0].Attempt != 2 {
		t.Errorf("redelivery = %+v; want %s attempt 2", ds[0], id)
	}
}

// BenchmarkStepCycle measures one worker step's queue traffic: send,
// receive and ack of one message (three bbolt write commits).
func BenchmarkStepCycle(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "certfleet.db"))
	defer db.Close()
	q, err := local.New(db, "bench", local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	msg := queue.Message{Kind: "issuance.poll", Body: []byte(`{"issue_id":"42"}`)}
	for b.Loop() {
		if _, err := q.Send(ctx, msg, 0); err != nil {
			b.Fatal(err)
		}
		ds, err := q.Receive(ctx, 1, time.Second)
		if err != nil || len(ds) != 1 {
			b.Fatalf("receive: %v, %d", err, len(ds))
		}
		if err := q.Ack(ctx, ds[0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
}
