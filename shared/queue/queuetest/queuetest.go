// Package queuetest is the conformance suite for the queue port. Every
// adapter's tests call Run with a factory that builds a fresh, empty queue;
// an adapter that passes behaves as the queue package documents.
//
// The suite uses short timeouts (a one-second visibility timeout, delays of a
// second or two) because SQS's timers have one-second granularity, so a full
// run takes seconds, not minutes. Subtests run in parallel.
package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/queue"
)

// Config is what a subtest asks of the queue it gets.
type Config struct {
	// Visibility is how long a received message stays invisible.
	Visibility time.Duration
	// MaxReceiveCount is how many receives without an acknowledgement a
	// message gets before it moves to the dead-letter list.
	MaxReceiveCount int
}

// Guarantees are what a backend promises beyond the port's at-least-once
// delivery; the suite checks each one a backend claims.
type Guarantees struct {
	// ExclusiveDelivery: within its visibility timeout a message goes to
	// one receiver only, even under concurrent receives. The local adapter
	// gives it; SQS standard queues (and moto) may deliver twice.
	ExclusiveDelivery bool
}

// Run runs the suite. newQueue must return a fresh, empty queue configured as
// c asks, and release it in t.Cleanup; it is called from parallel subtests,
// with the subtest's t.
func Run(t *testing.T, g Guarantees, newQueue func(t *testing.T, c Config) queue.Queue) {
	t.Helper()
	for _, tc := range []struct {
		name string
		cfg  Config
		fn   func(t *testing.T, q queue.Queue, c Config, g Guarantees)
	}{
		{"SendReceiveAck", Config{30 * time.Second, 5}, testSendReceiveAck},
		{"AckRemovesForGood", Config{time.Second, 5}, testAckRemovesForGood},
		{"Bodies", Config{30 * time.Second, 5}, testBodies},
		{"Delay", Config{30 * time.Second, 5}, testDelay},
		{"VisibilityTimeout", Config{time.Second, 5}, testVisibilityTimeout},
		{"Retry", Config{30 * time.Second, 5}, testRetry},
		{"DeadLetter", Config{time.Second, 2}, testDeadLetter},
		{"ReceiveMax", Config{30 * time.Second, 5}, testReceiveMax},
		{"ReceiveWait", Config{30 * time.Second, 5}, testReceiveWait},
		{"Validate", Config{30 * time.Second, 5}, testValidate},
		{"ConcurrentReceivers", Config{30 * time.Second, 5}, testConcurrentReceivers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQueue(t, tc.cfg)
			tc.fn(t, q, tc.cfg, g)
		})
	}
}

// slack absorbs scheduling and round-trip noise in upper time bounds.
const slack = 2 * time.Second

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func send(t *testing.T, q queue.Queue, m queue.Message, delay time.Duration) string {
	t.Helper()
	id, err := q.Send(ctxFor(t), m, delay)
	if err != nil {
		t.Fatalf("Send(%q, %s): %v", m.Kind, delay, err)
	}
	if id == "" {
		t.Fatalf("Send(%q) returned an empty ID", m.Kind)
	}
	return id
}

// receiveOne waits up to wait for exactly one delivery.
func receiveOne(t *testing.T, q queue.Queue, wait time.Duration) queue.Delivery {
	t.Helper()
	ctx := ctxFor(t)
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no delivery within %s", wait)
		}
		ds, err := q.Receive(ctx, 10, left)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		switch len(ds) {
		case 0:
			continue
		case 1:
			return ds[0]
		default:
			t.Fatalf("Receive returned %d deliveries, want 1: %+v", len(ds), ids(ds))
		}
	}
}

// expectNone asserts that nothing is delivered within wait.
func expectNone(t *testing.T, q queue.Queue, wait time.Duration, why string) {
	t.Helper()
	ds, err := q.Receive(ctxFor(t), 10, wait)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if len(ds) != 0 {
		t.Fatalf("%s: got %d deliveries %v, want none", why, len(ds), ids(ds))
	}
}

func ids(ds []queue.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func ack(t *testing.T, q queue.Queue, d queue.Delivery) {
	t.Helper()
	if err := q.Ack(ctxFor(t), d); err != nil {
		t.Fatalf("Ack(%s): %v", d.ID, err)
	}
}

func checkDelivery(t *testing.T, d queue.Delivery, id string, m queue.Message, attempt int) {
	t.Helper()
	if d.ID != id {
		t.Errorf("ID = %q, want %q", d.ID, id)
	}
	if d.Kind != m.Kind {
		t.Errorf("Kind = %q, want %q", d.Kind, m.Kind)
	}
	if !bytes.Equal(d.Body, m.Body) {
		t.Errorf("Body = %q, want %q", short(d.Body), short(m.Body))
	}
	if d.Attempt != attempt {
		t.Errorf("Attempt = %d, want %d", d.Attempt, attempt)
	}
	if d.Receipt == "" {
		t.Error("Receipt is empty")
	}
}

func short(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%s...(%d bytes)", b[:64], len(b))
	}
	return string(b)
}

func testSendReceiveAck(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	if err := q.Ping(ctxFor(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	m := queue.Message{Kind: "order", Body: []byte(`{"issue":"iss_1","step":"order"}`)}
	id := send(t, q, m, 0)
	d := receiveOne(t, q, 5*time.Second)
	checkDelivery(t, d, id, m, 1)
	expectNone(t, q, 0, "while the only message is in flight")
	ack(t, q, d)
	// Acking again is acking an expired receipt: not an error.
	ack(t, q, d)
}

func testAckRemovesForGood(t *testing.T, q queue.Queue, c Config, _ Guarantees) {
	m := queue.Message{Kind: "poll", Body: []byte("x")}
	send(t, q, m, 0)
	d := receiveOne(t, q, 5*time.Second)
	ack(t, q, d)
	// Well past the visibility timeout the message must not come back.
	expectNone(t, q, c.Visibility+1500*time.Millisecond, "after Ack")
	dead, err := q.ListDead(ctxFor(t), 10)
	if err != nil {
		t.Fatalf("ListDead: %v", err)
	}
	if len(dead) != 0 {
		t.Fatalf("ListDead after Ack = %d messages, want 0", len(dead))
	}
}

func testBodies(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	binary := make([]byte, 0, 512)
	for i := range 256 {
		binary = append(binary, byte(i), byte(255-i))
	}
	largest := bytes.Repeat([]byte{0xff, 0x00, 'a', 0xc3}, queue.MaxBodyBytes/4)
	text := []byte("naïve ☃ text, tabs\tand\nnewlines, 𝄞")
	want := map[string]queue.Message{}
	for _, m := range []queue.Message{
		{Kind: "empty"},
		{Kind: "binary", Body: binary},
		{Kind: "largest", Body: largest},
		{Kind: "text", Body: text},
		{Kind: strings.Repeat("k", queue.MaxKindBytes), Body: []byte("{}")},
	} {
		want[send(t, q, m, 0)] = m
	}
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages", len(got), len(want))
		}
		ds, err := q.Receive(ctxFor(t), 10, time.Second)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		for _, d := range ds {
			m, ok := want[d.ID]
			if !ok || got[d.ID] {
				t.Fatalf("unexpected delivery %q (kind %q)", d.ID, d.Kind)
			}
			got[d.ID] = true
			checkDelivery(t, d, d.ID, m, 1)
			ack(t, q, d)
		}
	}
}

func testDelay(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	const delay = 2 * time.Second
	m := queue.Message{Kind: "check", Body: []byte("later")}
	start := time.Now()
	id := send(t, q, m, delay)
	expectNone(t, q, 0, "before the delay")
	d := receiveOne(t, q, delay+slack+time.Second)
	if el := time.Since(start); el < delay {
		t.Errorf("delivered %s after Send, before the %s delay", el, delay)
	}
	checkDelivery(t, d, id, m, 1)
	ack(t, q, d)

	// A sub-second delay is honoured (SQS rounds it up), never dropped.
	m2 := queue.Message{Kind: "check", Body: []byte("soon")}
	start = time.Now()
	id2 := send(t, q, m2, 300*time.Millisecond)
	expectNone(t, q, 0, "before a 300ms delay")
	d = receiveOne(t, q, 3*time.Second)
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("delivered %s after Send, before the 300ms delay", el)
	}
	checkDelivery(t, d, id2, m2, 1)
	ack(t, q, d)
}

func testVisibilityTimeout(t *testing.T, q queue.Queue, c Config, _ Guarantees) {
	m := queue.Message{Kind: "present", Body: []byte("v")}
	id := send(t, q, m, 0)
	start := time.Now()
	first := receiveOne(t, q, 5*time.Second)
	checkDelivery(t, first, id, m, 1)
	expectNone(t, q, 0, "within the visibility timeout")
	second := receiveOne(t, q, c.Visibility+slack+time.Second)
	if el := time.Since(start); el < c.Visibility {
		t.Errorf("redelivered %s after the first receive, within the %s visibility timeout", el, c.Visibility)
	}
	checkDelivery(t, second, id, m, 2)
	if second.Receipt == first.Receipt {
		t.Error("the redelivery reuses the first receipt")
	}
	// The first receipt has expired: acking it is not an error.
	ack(t, q, first)
	ack(t, q, second)
}

func testRetry(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	m := queue.Message{Kind: "accept", Body: []byte("r")}
	id := send(t, q, m, 0)
	d := receiveOne(t, q, 5*time.Second)
	checkDelivery(t, d, id, m, 1)

	ctx := ctxFor(t)
	for _, bad := range []time.Duration{-time.Second, queue.MaxDelay + time.Second} {
		if err := q.Retry(ctx, d, bad); !errors.Is(err, queue.ErrInvalid) {
			t.Errorf("Retry(%s) = %v, want ErrInvalid", bad, err)
		}
	}

	const delay = time.Second
	start := time.Now()
	if err := q.Retry(ctx, d, delay); err != nil {
		t.Fatalf("Retry(%s): %v", delay, err)
	}
	expectNone(t, q, 0, "right after Retry with a delay")
	d = receiveOne(t, q, delay+slack+time.Second)
	if el := time.Since(start); el < delay {
		t.Errorf("redelivered %s after Retry(%s)", el, delay)
	}
	checkDelivery(t, d, id, m, 2)

	// Retry(0) makes it visible at once, long before the 30s visibility timeout.
	if err := q.Retry(ctx, d, 0); err != nil {
		t.Fatalf("Retry(0): %v", err)
	}
	d = receiveOne(t, q, 3*time.Second)
	checkDelivery(t, d, id, m, 3)
	ack(t, q, d)
}

func testDeadLetter(t *testing.T, q queue.Queue, c Config, _ Guarantees) {
	ctx := ctxFor(t)
	m := queue.Message{Kind: "finalize", Body: []byte("doomed")}
	id := send(t, q, m, 0)
	for attempt := 1; attempt <= c.MaxReceiveCount; attempt++ {
		d := receiveOne(t, q, c.Visibility+slack+time.Second)
		checkDelivery(t, d, id, m, attempt)
	}
	// The receive count is spent: once the last delivery's visibility
	// timeout passes the message is dead, never delivered again.
	expectNone(t, q, c.Visibility+slack, "after MaxReceiveCount receives")

	for range 2 { // listing twice shows that listing does not remove
		dead, err := q.ListDead(ctx, 10)
		if err != nil {
			t.Fatalf("ListDead: %v", err)
		}
		if len(dead) != 1 {
			t.Fatalf("ListDead = %d messages, want 1", len(dead))
		}
		if dead[0].ID != id || dead[0].Kind != m.Kind || !bytes.Equal(dead[0].Body, m.Body) {
			t.Fatalf("ListDead = %+v, want ID %q kind %q body %q", dead[0], id, m.Kind, m.Body)
		}
	}
	if _, err := q.ListDead(ctx, 0); !errors.Is(err, queue.ErrInvalid) {
		t.Errorf("ListDead(0) = %v, want ErrInvalid", err)
	}
	expectNone(t, q, 0, "while the message is dead")

	n, err := q.Redrive(ctx)
	if err != nil {
		t.Fatalf("Redrive: %v", err)
	}
	if n != 1 {
		t.Fatalf("Redrive moved %d, want 1", n)
	}
	dead, err := q.ListDead(ctx, 10)
	if err != nil {
		t.Fatalf("ListDead after Redrive: %v", err)
	}
	if len(dead) != 0 {
		t.Fatalf("ListDead after Redrive = %d messages, want 0", len(dead))
	}
	// Redriven: a new delivery with a fresh receive count, same ID.
	d := receiveOne(t, q, 5*time.Second)
	checkDelivery(t, d, id, m, 1)
	ack(t, q, d)
	if n, err := q.Redrive(ctx); err != nil || n != 0 {
		t.Fatalf("Redrive of an empty list = %d, %v; want 0, nil", n, err)
	}
}

func testReceiveMax(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	ctx := ctxFor(t)
	const total = 14
	sent := map[string]bool{}
	for i := range total {
		sent[send(t, q, queue.Message{Kind: "download", Body: fmt.Appendf(nil, "%d", i)}, 0)] = true
	}
	if _, err := q.Receive(ctx, 0, 0); !errors.Is(err, queue.ErrInvalid) {
		t.Errorf("Receive(max 0) = %v, want ErrInvalid", err)
	}
	got := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; len(got) < total; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages", len(got), total)
		}
		max := []int{3, 1, 50}[i%3]
		ds, err := q.Receive(ctx, max, time.Second)
		if err != nil {
			t.Fatalf("Receive(max %d): %v", max, err)
		}
		if len(ds) > max || len(ds) > queue.MaxReceiveBatch {
			t.Fatalf("Receive(max %d) returned %d deliveries", max, len(ds))
		}
		for _, d := range ds {
			if !sent[d.ID] || got[d.ID] {
				t.Fatalf("unexpected or repeated delivery %q", d.ID)
			}
			got[d.ID] = true
		}
	}
}

func testReceiveWait(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	ctx := ctxFor(t)
	if _, err := q.Receive(ctx, 1, -time.Second); !errors.Is(err, queue.ErrInvalid) {
		t.Errorf("Receive(wait -1s) = %v, want ErrInvalid", err)
	}

	start := time.Now()
	expectNone(t, q, 0, "empty queue, no wait")
	if el := time.Since(start); el > slack {
		t.Errorf("Receive with no wait took %s", el)
	}

	const wait = time.Second
	start = time.Now()
	expectNone(t, q, wait, "empty queue, waiting")
	if el := time.Since(start); el < wait-50*time.Millisecond || el > wait+slack {
		t.Errorf("Receive(wait %s) on an empty queue returned after %s", wait, el)
	}

	// A message sent during the wait ends it early.
	m := queue.Message{Kind: "store", Body: []byte("w")}
	ids := make(chan string, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		id, err := q.Send(ctx, m, 0)
		if err != nil {
			t.Errorf("Send: %v", err)
		}
		ids <- id
	}()
	start = time.Now()
	d := receiveOne(t, q, 10*time.Second)
	if el := time.Since(start); el > 300*time.Millisecond+slack {
		t.Errorf("a message sent 300ms into the wait was received after %s", el)
	}
	checkDelivery(t, d, <-ids, m, 1)
	ack(t, q, d)
}

func testValidate(t *testing.T, q queue.Queue, _ Config, _ Guarantees) {
	ctx := ctxFor(t)
	for _, tc := range []struct {
		name  string
		m     queue.Message
		delay time.Duration
	}{
		{"empty kind", queue.Message{Body: []byte("b")}, 0},
		{"long kind", queue.Message{Kind: strings.Repeat("k", queue.MaxKindBytes+1)}, 0},
		{"large body", queue.Message{Kind: "k", Body: make([]byte, queue.MaxBodyBytes+1)}, 0},
		{"negative delay", queue.Message{Kind: "k"}, -time.Second},
		{"long delay", queue.Message{Kind: "k"}, queue.MaxDelay + time.Second},
	} {
		id, err := q.Send(ctx, tc.m, tc.delay)
		if !errors.Is(err, queue.ErrInvalid) {
			t.Errorf("%s: Send = %q, %v; want ErrInvalid", tc.name, id, err)
		}
	}
	expectNone(t, q, 0, "after invalid sends")
	// The limits themselves are accepted.
	send(t, q, queue.Message{Kind: "k"}, queue.MaxDelay)
}

func testConcurrentReceivers(t *testing.T, q queue.Queue, _ Config, g Guarantees) {
	// Run with a visibility timeout far longer than the test, so any
	// repeat within it is a double delivery. Every backend must deliver
	// every message; only one that claims ExclusiveDelivery must never
	// deliver one twice.
	ctx := ctxFor(t)
	const total, receivers = 40, 6
	for i := range total {
		send(t, q, queue.Message{Kind: "announce", Body: fmt.Appendf(nil, "%d", i)}, 0)
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	deadline := time.Now().Add(20 * time.Second)
	for range receivers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				mu.Lock()
				done := len(seen) >= total
				mu.Unlock()
				if done {
					return
				}
				ds, err := q.Receive(ctx, 3, time.Second)
				if err != nil {
					t.Errorf("Receive: %v", err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != total {
		t.Errorf("received %d distinct messages, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 && g.ExclusiveDelivery {
			t.Errorf("message %s delivered %d times within its visibility timeout", id, n)
		}
	}
}
