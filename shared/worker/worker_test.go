package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testlog"

	"go.etcd.io/bbolt"

	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/queue/local"
	"github.com/certfleet/certfleet/shared/worker"
)

func newQueue(t *testing.T, opts local.Options) *local.Queue {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "certfleet.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	q, err := local.New(db, "work", opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// start runs worker.Run in the background; stop cancels it and returns
// Run's result, or an error if Run does not return within a few seconds.
func start(t *testing.T, q queue.Receiver, reg *worker.Registry, opts worker.Options) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan error, 1)
	go func() { ch <- worker.Run(ctx, q, reg, opts) }()
	stop = func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("Run did not return within 5s of cancel")
		}
	}
	t.Cleanup(func() { cancel() })
	return stop, ch
}

func sendN(t *testing.T, q queue.Sender, kind string, n int) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for i := range n {
		id, err := q.Send(t.Context(), queue.Message{Kind: kind, Body: fmt.Appendf(nil, `{"n":%d,"secret":"do-not-log"}`, i)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	return ids
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func expectEmpty(t *testing.T, q *local.Queue) {
	t.Helper()
	ds, err := q.Receive(t.Context(), 10, 0)
	if err != nil || len(ds) != 0 {
		t.Errorf("queue still holds %d deliveries (%v)", len(ds), err)
	}
	dead, err := q.ListDead(t.Context(), 10)
	if err != nil || len(dead) != 0 {
		t.Errorf("dead list holds %d messages (%v)", len(dead), err)
	}
}

func TestRegistry(t *testing.T) {
	var reg worker.Registry
	var got queue.Delivery
	reg.Register("order", func(ctx context.Context, m queue.Delivery) error {
		got = m
		return nil
	})
	boom := errors.New("boom")
	reg.Register("fail", func(ctx context.Context, m queue.Delivery) error { return boom })

	d := queue.Delivery{Message: queue.Message{ID: "1", Kind: "order", Body: []byte("b")}, Attempt: 3}
	if err := reg.Dispatch(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if got.ID != "1" || got.Kind != "order" || string(got.Body) != "b" || got.Attempt != 3 {
		t.Errorf("handler got %+v", got)
	}
	if err := reg.Dispatch(t.Context(), queue.Delivery{Message: queue.Message{Kind: "fail"}}); !errors.Is(err, boom) {
		t.Errorf("Dispatch(fail) = %v, want the handler's error", err)
	}
	err := reg.Dispatch(t.Context(), queue.Delivery{Message: queue.Message{Kind: "nosuch"}})
	if err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.HasPrefix(err.Error(), "worker: ") {
		t.Errorf("Dispatch(unknown kind) = %v, want a worker: error naming the kind", err)
	}

	for name, fn := range map[string]func(){
		"duplicate":   func() { reg.Register("order", func(context.Context, queue.Delivery) error { return nil }) },
		"empty kind":  func() { reg.Register("", func(context.Context, queue.Delivery) error { return nil }) },
		"nil handler": func() { reg.Register("x", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register %s did not panic", name)
				}
			}()
			fn()
		}()
	}
}

func TestRunNeedsArguments(t *testing.T) {
	if err := worker.Run(t.Context(), nil, &worker.Registry{}, worker.Options{}); err == nil {
		t.Error("Run with a nil receiver succeeded")
	}
}

func TestRunProcessesEachMessageOnce(t *testing.T) {
	q := newQueue(t, local.Options{Visibility: time.Second, MaxReceiveCount: 5})
	const n, conc = 60, 4
	want := sendN(t, q, "order", n/2)
	for id := range sendN(t, q, "present", n/2) {
		want[id] = true
	}

	var (
		mu              sync.Mutex
		calls           = map[string]int{}
		running, peak   atomic.Int32
		kinds           = map[string]int{}
		handlerCtxAlive = true
	)
	h := func(ctx context.Context, m queue.Delivery) error {
		cur := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		calls[m.ID]++
		kinds[m.Kind]++
		if ctx.Err() != nil {
			handlerCtxAlive = false
		}
		mu.Unlock()
		return nil
	}
	var reg worker.Registry
	reg.Register("order", h)
	reg.Register("present", h)
	logs := &testlog.Buffer{}
	stop, _ := start(t, q, &reg, worker.Options{Concurrency: conc, Logger: slog.New(slog.NewJSONHandler(logs, nil))})

	waitFor(t, "every message to be handled", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) == n
	})
	// Well past the visibility timeout: an unacknowledged message would be
	// back by now.
	time.Sleep(1500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	for id := range want {
		if calls[id] != 1 {
			t.Errorf("message %s handled %d times, want 1", id, calls[id])
		}
	}
	if kinds["order"] != n/2 || kinds["present"] != n/2 {
		t.Errorf("handled per kind %v", kinds)
	}
	if p := peak.Load(); p > conc || p < 2 {
		t.Errorf("peak concurrency %d, want 2..%d", p, conc)
	}
	if !handlerCtxAlive {
		t.Error("a handler saw a cancelled context")
	}
	if l := logs.String(); l != "" {
		t.Errorf("unexpected log output on success:\n%s", l)
	}
	expectEmpty(t, q)
}

func TestRunRetriesFailures(t *testing.T) {
	q := newQueue(t, local.Options{Visibility: 30 * time.Second, MaxReceiveCount: 3})
	flaky := sendN(t, q, "flaky", 3)
	panicky := sendN(t, q, "panicky", 1)
	orphan := sendN(t, q, "orphan", 1) // no handler: retried, then dead

	var (
		mu       sync.Mutex
		attempts = map[string][]int{}
		backoffs []int
	)
	var reg worker.Registry
	reg.Register("flaky", func(ctx context.Context, m queue.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[m.ID] = append(attempts[m.ID], len(attempts[m.ID])+1)
		if len(attempts[m.ID]) < 3 {
			return errors.New("ca not ready")
		}
		return nil
	})
	reg.Register("panicky", func(ctx context.Context, m queue.Delivery) error {
		mu.Lock()
		attempts[m.ID] = append(attempts[m.ID], len(attempts[m.ID])+1)
		first := len(attempts[m.ID]) == 1
		mu.Unlock()
		if first {
			panic("nil map somewhere")
		}
		return nil
	})
	logs := &testlog.Buffer{}
	stop, _ := start(t, q, &reg, worker.Options{
		Concurrency: 2,
		Backoff: func(attempt int) time.Duration {
			mu.Lock()
			backoffs = append(backoffs, attempt)
			mu.Unlock()
			return 50 * time.Millisecond
		},
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})

	var orphanID string
	for id := range orphan {
		orphanID = id
	}
	waitFor(t, "the flaky messages to succeed and the orphan to die", 10*time.Second, func() bool {
		mu.Lock()
		done := 0
		for id := range flaky {
			if len(attempts[id]) == 3 {
				done++
			}
		}
		for id := range panicky {
			if len(attempts[id]) == 2 {
				done++
			}
		}
		mu.Unlock()
		dead, err := q.ListDead(t.Context(), 10)
		return done == len(flaky)+len(panicky) && err == nil && len(dead) == 1 && dead[0].ID == orphanID
	})
	time.Sleep(200 * time.Millisecond) // room for an extra, wrong, delivery
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	for id := range flaky {
		if got := attempts[id]; len(got) != 3 {
			t.Errorf("flaky %s handled %d times, want 3", id, len(got))
		}
	}
	for id := range panicky {
		if got := attempts[id]; len(got) != 2 {
			t.Errorf("panicky %s handled %d times, want 2", id, len(got))
		}
	}
	// 3 flaky × 2 failures + 1 panic + 3 orphan failures.
	if len(backoffs) != 10 {
		t.Errorf("Backoff called %d times (%v), want 10", len(backoffs), backoffs)
	}

	l := logs.String()
	for _, want := range []string{
		`"kind":"flaky"`, `"attempt":1`, `"attempt":2`, `"error":"ca not ready"`,
		`"kind":"orphan"`, `"id":"` + orphanID + `"`, `no handler for kind \"orphan\"`,
		`handler panicked: nil map somewhere`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}
	if strings.Contains(l, "do-not-log") {
		t.Errorf("a message body reached the log:\n%s", l)
	}
	if n := strings.Count(l, `"msg":"worker: step failed"`); n != 10 {
		t.Errorf("%d failure records, want 10", n)
	}
	if ds, err := q.Receive(t.Context(), 10, 0); err != nil || len(ds) != 0 {
		t.Errorf("queue still holds %d deliveries (%v)", len(ds), err)
	}
}

func TestRunGracefulStop(t *testing.T) {
	q := newQueue(t, local.Options{Visibility: time.Second, MaxReceiveCount: 5})
	first, err := q.Send(t.Context(), queue.Message{Kind: "block", Body: []byte("1")}, 0)
	if err != nil {
		t.Fatal(err)
	}

	started := make(chan string, 2)
	release := make(chan struct{})
	var ctxErr atomic.Value
	var reg worker.Registry
	reg.Register("block", func(ctx context.Context, m queue.Delivery) error {
		started <- m.ID
		<-release
		ctxErr.Store(fmt.Sprint(ctx.Err()))
		return nil
	})
	stop, done := start(t, q, &reg, worker.Options{Concurrency: 1})

	if id := <-started; id != first {
		t.Fatalf("started %s, want %s", id, first)
	}
	// With its only slot busy the loop must not take the second message.
	second, err := q.Send(t.Context(), queue.Message{Kind: "block", Body: []byte("2")}, 0)
	if err != nil {
		t.Fatal(err)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a handler was still running", err)
	case <-stopped:
		t.Fatal("stop returned while a handler was still running")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := ctxErr.Load(); got != "<nil>" {
		t.Errorf("the in-flight handler's context ended: %v", got)
	}
	select {
	case id := <-started:
		t.Errorf("a handler started for %s after cancel", id)
	default:
	}

	// The first message was acknowledged: past its visibility timeout only
	// the second, never received, is on the queue.
	time.Sleep(1100 * time.Millisecond)
	ds, err := q.Receive(t.Context(), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].ID != second || ds[0].Attempt != 1 {
		t.Fatalf("after stop the queue delivers %+v; want only %s at attempt 1", ds, second)
	}
}
