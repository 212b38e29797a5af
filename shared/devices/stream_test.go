package devices_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

// streamReadCounter counts a store's reads (Get and Query).
type streamReadCounter struct {
	store.Store
	reads atomic.Int64
}

func (c *streamReadCounter) Get(ctx context.Context, k store.Key) (store.Item, error) {
	c.reads.Add(1)
	return c.Store.Get(ctx, k)
}

func (c *streamReadCounter) Query(ctx context.Context, q store.Query) (store.Page, error) {
	c.reads.Add(1)
	return c.Store.Query(ctx, q)
}

// streamClock is real time plus a settable offset (negative: the past).
type streamClock struct{ offset atomic.Int64 }

func (c *streamClock) Now() time.Time      { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *streamClock) Set(d time.Duration) { c.offset.Store(int64(d)) }

func streamNew(t *testing.T, cfg devices.StreamConfig) (*devices.Stream, *streamReadCounter) {
	t.Helper()
	rc := &streamReadCounter{Store: testenv.New(t).Store}
	return devices.NewStream(rc, cfg), rc
}

func streamSignal(t *testing.T, s *devices.Stream, device int64, typ string, ref map[string]any) {
	t.Helper()
	if err := s.Signal(context.Background(), 1, device, typ, ref); err != nil {
		t.Fatal(err)
	}
}

func streamAfter(t *testing.T, s *devices.Stream, device int64, cursor string, limit int) devices.StreamPage {
	t.Helper()
	p, err := s.After(context.Background(), device, cursor, limit)
	if err != nil {
		t.Fatalf("After(%q): %v", cursor, err)
	}
	return p
}

// TestStreamPagesWithoutLossOrDuplication: 250 signals paged 100 at a
// time arrive once each, in order, every ts_ms distinct; the cursor after
// the last page is the head and polls there are empty.
func TestStreamPagesWithoutLossOrDuplication(t *testing.T) {
	s, _ := streamNew(t, devices.StreamConfig{})
	const dev = 7
	empty := streamAfter(t, s, dev, "", 20)
	if empty.Cursor != "0-0" || len(empty.Signals) != 0 {
		t.Fatalf("empty stream: %+v", empty)
	}
	for i := range 250 {
		streamSignal(t, s, dev, devices.SignalCertUpdated, map[string]any{"cert_id": i})
	}
	streamSignal(t, s, dev+1, devices.SignalCertUpdated, map[string]any{"cert_id": -1}) // another device's
	var got []int
	seenTs := map[int64]bool{}
	cursor, pages := "0-0", 0
	for {
		p := streamAfter(t, s, dev, cursor, 100)
		if len(p.Signals) == 0 {
			if p.Cursor != cursor {
				t.Fatalf("empty page moved the cursor %s → %s", cursor, p.Cursor)
			}
			break
		}
		if p.Cursor <= cursor {
			t.Fatalf("cursor did not advance: %s → %s", cursor, p.Cursor)
		}
		pages++
		for _, sg := range p.Signals {
			if sg.Type != devices.SignalCertUpdated || sg.TsMs <= 0 || sg.Ref == nil || seenTs[sg.TsMs] {
				t.Fatalf("bad or repeated signal %+v", sg)
			}
			seenTs[sg.TsMs] = true
			got = append(got, int(sg.Ref["cert_id"].(float64)))
		}
		cursor = p.Cursor
	}
	if pages != 3 || len(got) != 250 {
		t.Fatalf("%d pages, %d signals", pages, len(got))
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("signal %d is cert %d", i, v)
		}
	}
	// The unpadded form of a cursor is the same cursor.
	var ms, seq int64
	if _, err := fmt.Sscanf(cursor, "%d-%d", &ms, &seq); err != nil {
		t.Fatal(err)
	}
	if p := streamAfter(t, s, dev, fmt.Sprintf("%d-%d", ms, seq), 5); len(p.Signals) != 0 || p.Cursor != cursor {
		t.Fatalf("unpadded head cursor: %+v", p)
	}
	for _, bad := range []string{"x", "1-", "-1", "12345678901234-0", "1-12345", "1736900123421-0/..", "0-0 "} {
		if _, err := s.After(context.Background(), dev, bad, 5); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("cursor %q: %v", bad, err)
		}
	}
	for _, l := range []int{0, 101} {
		if _, err := s.After(context.Background(), dev, "", l); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("limit %d: %v", l, err)
		}
	}
}

// TestStreamEmptyPollIsOneRead: a poll with nothing new, from the start
// of an empty stream, at the head, and of a deleted device, is one read.
func TestStreamEmptyPollIsOneRead(t *testing.T) {
	s, rc := streamNew(t, devices.StreamConfig{})
	ctx := context.Background()
	poll := func(cursor string) (devices.StreamPage, error) {
		before := rc.reads.Load()
		p, err := s.After(ctx, 3, cursor, 20)
		if n := rc.reads.Load() - before; n != 1 {
			t.Fatalf("poll at %q: %d store reads", cursor, n)
		}
		return p, err
	}
	if p, err := poll(""); err != nil || p.Cursor != "0-0" {
		t.Fatalf("empty stream: %+v %v", p, err)
	}
	for range 3 {
		streamSignal(t, s, 3, devices.SignalInstallUpdated, nil)
	}
	p, err := poll("0-0")
	if err != nil || len(p.Signals) != 3 {
		t.Fatalf("%+v %v", p, err)
	}
	for range 2 {
		if q, err := poll(p.Cursor); err != nil || len(q.Signals) != 0 || q.Cursor != p.Cursor {
			t.Fatalf("at the head: %+v %v", q, err)
		}
	}
	if err := s.Close(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := poll(p.Cursor); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("deleted device: %v", err)
	}
	if _, err := poll(""); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("deleted device from the start: %v", err)
	}
	// A deleted device gets no more signals; one that never had a signal
	// is closed too.
	streamSignal(t, s, 3, devices.SignalCertUpdated, nil)
	if err := s.Close(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := poll(""); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("after a signal to a deleted device: %v", err)
	}
	if _, err := s.After(ctx, 4, "", 20); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("deleted device without signals: %v", err)
	}
}

// TestStreamTrimmedCursor: cursors whose successors expired, that are
// ahead of the head, or that a stream never handed out are trimmed; the
// start and the head never are.
func TestStreamTrimmedCursor(t *testing.T) {
	clock := &streamClock{}
	const retention = time.Hour
	s, rc := streamNew(t, devices.StreamConfig{Retention: retention, Now: clock.Now})
	ctx := context.Background()
	const dev = 11
	// Written a retention and more ago: expired on arrival.
	clock.Set(-retention - 2*time.Second)
	for i := range 3 {
		streamSignal(t, s, dev, devices.SignalCertUpdated, map[string]any{"old": i})
	}
	clock.Set(0)
	head := streamAfter(t, s, dev, "", 20)
	if len(head.Signals) != 0 || head.Cursor == "0-0" {
		t.Fatalf("all expired, from the start: %+v", head)
	}
	trimmed := func(cursor, earliest string) {
		t.Helper()
		before := rc.reads.Load()
		_, err := s.After(ctx, dev, cursor, 20)
		var te *devices.CursorTrimmedError
		if !errors.Is(err, devices.ErrCursorTrimmed) || !errors.As(err, &te) || apperr.CodeOf(err) != apperr.Conflict {
			t.Fatalf("cursor %s: %v", cursor, err)
		}
		if earliest != "" && te.EarliestRetained != earliest {
			t.Fatalf("cursor %s: earliest retained %s, want %s", cursor, te.EarliestRetained, earliest)
		}
		if n := rc.reads.Load() - before; n != 1 {
			t.Fatalf("trim check: %d reads", n)
		}
	}
	// A cursor before the old entries: all after it expired.
	oldCursor := "0000000000001-0000" // before every entry, not the start
	trimmed(oldCursor, head.Cursor)
	if p := streamAfter(t, s, dev, head.Cursor, 20); len(p.Signals) != 0 || p.Cursor != head.Cursor {
		t.Fatalf("the head is never trimmed: %+v", p)
	}
	// New signals: the old cursor is still trimmed (the gap), with the
	// first new entry as the earliest retained; the head of the old
	// entries and the start resume without loss.
	streamSignal(t, s, dev, devices.SignalCertUpdated, map[string]any{"new": 0})
	streamSignal(t, s, dev, devices.SignalCertUpdated, map[string]any{"new": 1})
	fresh := streamAfter(t, s, dev, "0-0", 20)
	if len(fresh.Signals) != 2 || fresh.Signals[0].Ref["new"] != float64(0) {
		t.Fatalf("from the start after expiry: %+v", fresh)
	}
	firstNew := streamAfter(t, s, dev, head.Cursor, 1)
	if len(firstNew.Signals) != 1 || firstNew.Signals[0].Ref["new"] != float64(0) {
		t.Fatalf("from the old head: %+v", firstNew)
	}
	trimmed(oldCursor, firstNew.Cursor)
	// A cursor past the head (a stream reset under the agent).
	trimmed(fmt.Sprintf("%013d-0000", time.Now().Add(time.Hour).UnixMilli()), fresh.Cursor)
	// A cursor on a stream that never had a signal.
	if _, err := s.After(ctx, dev+1, fresh.Cursor, 20); !errors.Is(err, devices.ErrCursorTrimmed) {
		t.Fatalf("cursor on an empty stream: %v", err)
	}
	if p := streamAfter(t, s, dev+1, "0-0", 20); p.Cursor != "0-0" {
		t.Fatalf("start of an empty stream: %+v", p)
	}
}

// TestStreamRacedEntryIsNotTrimmed: a head newer than the cursor whose
// entry the read does not see yet (a query racing the write) is "nothing
// new", not a trim, while that entry is young.
func TestStreamRacedEntryIsNotTrimmed(t *testing.T) {
	st := testenv.New(t).Store
	s := devices.NewStream(st, devices.StreamConfig{})
	streamSignal(t, s, 5, devices.SignalCertUpdated, nil)
	p := streamAfter(t, s, 5, "", 20)
	next := fmt.Sprintf("%013d-0000", time.Now().UnixMilli()+5)
	head, err := store.JSONItem(store.Key{Table: devices.Table, PK: "stream#5", SK: "head"}, map[string]any{"last": next, "ts_ms": 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), head, store.Always); err != nil {
		t.Fatal(err)
	}
	if q, err := s.After(context.Background(), 5, p.Cursor, 20); err != nil || len(q.Signals) != 0 || q.Cursor != p.Cursor {
		t.Fatalf("raced entry: %+v %v", q, err)
	}
}

// TestStreamConcurrentSignalsUniqueTs: 16 concurrent signals of one type
// to one device, through two Streams over one store (two processes), get
// 16 distinct ts_ms and 16 ordered cursors.
func TestStreamConcurrentSignalsUniqueTs(t *testing.T) {
	st := testenv.New(t).Store
	a, b := devices.NewStream(st, devices.StreamConfig{}), devices.NewStream(st, devices.StreamConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			errs <- s.Signal(context.Background(), 1, 9, devices.SignalCertUpdated, map[string]any{"i": i})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int64]bool{}
	cursor, n := "", 0
	var lastTs int64
	for {
		p := streamAfter(t, a, 9, cursor, 3)
		if len(p.Signals) == 0 {
			break
		}
		for _, sg := range p.Signals {
			if seen[sg.TsMs] || sg.TsMs <= lastTs {
				t.Fatalf("ts_ms %d repeated or out of order (previous %d)", sg.TsMs, lastTs)
			}
			seen[sg.TsMs], lastTs = true, sg.TsMs
			n++
		}
		cursor = p.Cursor
	}
	if n != 16 {
		t.Fatalf("%d signals", n)
	}
}

// TestStreamLongPoll: a held poll is woken by Signal at once, returns at
// once with wait 0 or when a signal is already there, re-reads for signals
// another process wrote, and leaves no waiter or goroutine behind.
func TestStreamLongPoll(t *testing.T) {
	st := testenv.New(t).Store
	s := devices.NewStream(st, devices.StreamConfig{Recheck: time.Minute, MaxWaiters: 4})
	ctx := context.Background()
	goroutines := runtime.NumGoroutine()

	start := time.Now()
	if p, err := s.Wait(ctx, 1, "", 20, 0); err != nil || len(p.Signals) != 0 || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("wait 0: %+v %v after %v", p, err, time.Since(start))
	}

	type result struct {
		p   devices.StreamPage
		err error
		d   time.Duration
	}
	hold := func(s *devices.Stream, cursor string, wait time.Duration) chan result {
		ch := make(chan result, 1)
		go func() {
			start := time.Now()
			p, err := s.Wait(ctx, 1, cursor, 20, wait)
			ch <- result{p, err, time.Since(start)}
		}()
		return ch
	}
	waitFor := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); s.Waiting() != n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d waiting, want %d", s.Waiting(), n)
			}
		}
	}

	// Woken by a signal, well before wait (and Recheck).
	polls := []chan result{hold(s, "", 20*time.Second), hold(s, "", 20*time.Second)}
	waitFor(2)
	time.Sleep(20 * time.Millisecond)
	streamSignal(t, s, 1, devices.SignalInstallUpdated, map[string]any{"version": 2})
	var cursor string
	for _, ch := range polls {
		r := <-ch
		if r.err != nil || len(r.p.Signals) != 1 || r.d > 2*time.Second {
			t.Fatalf("woken poll: %+v %v after %v", r.p, r.err, r.d)
		}
		cursor = r.p.Cursor
	}
	waitFor(0)

	// A signal already there: at once.
	start = time.Now()
	if p, err := s.Wait(ctx, 1, "", 20, 20*time.Second); err != nil || len(p.Signals) != 1 || time.Since(start) > time.Second {
		t.Fatalf("pending signal: %+v %v", p, err)
	}

	// Nothing comes: back after wait with the same cursor.
	r := <-hold(s, cursor, 300*time.Millisecond)
	if r.err != nil || len(r.p.Signals) != 0 || r.p.Cursor != cursor || r.d < 300*time.Millisecond || r.d > 2*time.Second {
		t.Fatalf("timed out poll: %+v %v after %v", r.p, r.err, r.d)
	}

	// Another process's signal: found by the re-read.
	other := devices.NewStream(st, devices.StreamConfig{})
	fast := devices.NewStream(st, devices.StreamConfig{Recheck: 50 * time.Millisecond})
	ch := hold(fast, cursor, 20*time.Second)
	for deadline := time.Now().Add(5 * time.Second); fast.Waiting() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the poll never waited")
		}
	}
	streamSignal(t, other, 1, devices.SignalCertUpdated, nil)
	if r := <-ch; r.err != nil || len(r.p.Signals) != 1 || r.d > 2*time.Second {
		t.Fatalf("poll re-reading: %+v %v after %v", r.p, r.err, r.d)
	}

	// Over MaxWaiters, a poll is answered at once; cancelled polls and
	// Close release theirs.
	cctx, cancel := context.WithCancel(ctx)
	head := streamAfter(t, s, 1, cursor, 20).Cursor
	held := []chan result{}
	for range 4 {
		c := make(chan result, 1)
		go func() {
			p, err := s.Wait(cctx, 1, head, 20, time.Minute)
			c <- result{p: p, err: err}
		}()
		held = append(held, c)
	}
	waitFor(4)
	start = time.Now()
	if p, err := s.Wait(ctx, 1, head, 20, time.Minute); err != nil || len(p.Signals) != 0 || time.Since(start) > time.Second {
		t.Fatalf("poll over MaxWaiters: %+v %v after %v", p, err, time.Since(start))
	}
	cancel()
	for _, c := range held {
		if r := <-c; r.err != nil || len(r.p.Signals) != 0 {
			t.Fatalf("cancelled poll: %+v %v", r.p, r.err)
		}
	}
	waitFor(0)
	closing := hold(s, head, time.Minute)
	waitFor(1)
	if err := s.Close(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := <-closing; apperr.CodeOf(r.err) != apperr.Unauthorized || r.d > 2*time.Second {
		t.Fatalf("poll of a device deleted meanwhile: %v after %v", r.err, r.d)
	}
	waitFor(0)

	// Many polls come and go: nothing stays.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			c, cancel := context.WithTimeout(ctx, time.Duration(i%20)*time.Millisecond)
			defer cancel()
			_, _ = s.Wait(c, int64(100+i%10), "", 20, 30*time.Millisecond)
		})
	}
	wg.Wait()
	if n := s.Waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), goroutines)
		}
	}
}
