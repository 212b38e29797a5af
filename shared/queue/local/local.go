// Package local is the queue port's embedded adapter: a durable queue kept in
// the bbolt file that the local shape shares with store/bolt.
//
// Each queue lives in one top-level bucket named "queue/" + name, holding
// three nested buckets: the messages by ID, an index of when each live
// message becomes visible, and an index of dead messages by the time they
// died. Every operation is one bbolt transaction, so a receive is atomic
// (concurrent receivers never get the same message while it is invisible)
// and the queue survives a restart: messages in flight when the process
// stopped become visible again when their visibility timeout ends.
//
// Semantics match queue/sqs: a message that has been received
// MaxReceiveCount times without an acknowledgement moves to the dead-letter
// list when its last visibility timeout has passed (at the next Receive,
// ListDead or Redrive). Message IDs stay the same across redrives.
//
// Time is the wall clock (time.Now), stored as Unix nanoseconds.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/certfleet/certfleet/shared/queue"
)

// Defaults for Options fields left zero.
const (
	DefaultVisibility      = 60 * time.Second
	DefaultMaxReceiveCount = 5
)

// pollInterval bounds how long a waiting Receive sleeps between looks at the
// queue when nothing tells it earlier (a Send from another Queue value on
// the same bucket, say). Sends, retries and redrives through this Queue
// wake waiting receivers at once.
const pollInterval = 500 * time.Millisecond

// formatVersion is the layout version stored in the queue's bucket.
const formatVersion = "1"

var (
	keyVersion = []byte("version")
	bktMsgs    = []byte("msgs")  // id -> record (JSON)
	bktReady   = []byte("ready") // visibleAt(8) id -> nil, live messages
	bktDead    = []byte("dead")  // deadAt(8) id -> nil, dead messages
)

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,80}$`)

// Options configures a Queue.
type Options struct {
	// Visibility is how long a received message stays invisible before it
	// is delivered again. Zero means DefaultVisibility.
	Visibility time.Duration
	// MaxReceiveCount is how many receives without an acknowledgement a
	// message gets before it moves to the dead-letter list. Zero means
	// DefaultMaxReceiveCount.
	MaxReceiveCount int
}

// Queue is a durable queue in a bbolt file. Safe for concurrent use.
type Queue struct {
	db     *bbolt.DB
	name   []byte
	vis    time.Duration
	maxRcv int

	mu   sync.Mutex
	wake chan struct{} // closed and replaced when messages may have become visible
}

var _ queue.Queue = (*Queue)(nil)

// New opens (creating if needed) the queue called name in db. name is 1..80
// of A-Z a-z 0-9 . _ -. The caller owns db and closes it after the last use
// of the Queue; use one Queue value per name and process.
func New(db *bbolt.DB, name string, opts Options) (*Queue, error) {
	if db == nil {
		return nil, errors.New("local: nil database")
	}
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("local: queue name %q: want 1..80 of A-Z a-z 0-9 . _ -", name)
	}
	if opts.Visibility == 0 {
		opts.Visibility = DefaultVisibility
	}
	if opts.MaxReceiveCount == 0 {
		opts.MaxReceiveCount = DefaultMaxReceiveCount
	}
	if opts.Visibility < time.Millisecond {
		return nil, fmt.Errorf("local: visibility timeout %s is under 1ms", opts.Visibility)
	}
	if opts.MaxReceiveCount < 1 {
		return nil, fmt.Errorf("local: max receive count %d is under 1", opts.MaxReceiveCount)
	}
	q := &Queue{
		db:     db,
		name:   []byte("queue/" + name),
		vis:    opts.Visibility,
		maxRcv: opts.MaxReceiveCount,
		wake:   make(chan struct{}),
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(q.name)
		if err != nil {
			return err
		}
		switch v := root.Get(keyVersion); {
		case v == nil:
			if err := root.Put(keyVersion, []byte(formatVersion)); err != nil {
				return err
			}
		case string(v) != formatVersion:
			return fmt.Errorf("bucket %s has layout version %q, want %q", q.name, v, formatVersion)
		}
		for _, b := range [][]byte{bktMsgs, bktReady, bktDead} {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local: open queue %q: %w", name, err)
	}
	return q, nil
}

// record is a message as stored.
type record struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Body []byte `json:"body,omitempty"`
	// Receives counts deliveries since the last send or redrive.
	Receives int `json:"receives"`
	// Receipt is the current delivery's receipt; empty before the first
	// delivery and once dead.
	Receipt string `json:"receipt,omitempty"`
	// VisibleAt (Unix ns) is when a live message may be delivered next.
	VisibleAt int64 `json:"visible_at,omitempty"`
	// DeadAt (Unix ns) is set once the message is dead.
	DeadAt int64 `json:"dead_at,omitempty"`
}

// buckets are one queue's buckets inside a transaction.
type buckets struct{ msgs, ready, dead *bbolt.Bucket }

func (q *Queue) buckets(tx *bbolt.Tx) (buckets, error) {
	root := tx.Bucket(q.name)
	if root == nil {
		return buckets{}, fmt.Errorf("bucket %s is missing", q.name)
	}
	return buckets{root.Bucket(bktMsgs), root.Bucket(bktReady), root.Bucket(bktDead)}, nil
}

func timeKey(t int64, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t))
	return append(k, id...)
}

func keyTime(k []byte) int64 { return int64(binary.BigEndian.Uint64(k[:8])) }

func (b buckets) get(id string) (*record, error) {
	v := b.msgs.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode message %s: %w", id, err)
	}
	return &r, nil
}

func (b buckets) put(r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.msgs.Put([]byte(r.ID), v)
}

// schedule moves a live message's ready entry to at.
func (b buckets) schedule(r *record, at int64) error {
	if r.VisibleAt != 0 {
		if err := b.ready.Delete(timeKey(r.VisibleAt, r.ID)); err != nil {
			return err
		}
	}
	r.VisibleAt = at
	if err := b.ready.Put(timeKey(at, r.ID), nil); err != nil {
		return err
	}
	return b.put(r)
}

// kill moves a live message to the dead list.
func (b buckets) kill(r *record, now int64) error {
	if err := b.ready.Delete(timeKey(r.VisibleAt, r.ID)); err != nil {
		return err
	}
	r.VisibleAt, r.DeadAt, r.Receipt = 0, now, ""
	if err := b.dead.Put(timeKey(now, r.ID), nil); err != nil {
		return err
	}
	return b.put(r)
}

// sweep kills every visible message whose receive count is spent.
func (q *Queue) sweep(b buckets, now int64) error {
	var spent []*record
	c := b.ready.Cursor()
	for k, _ := c.First(); k != nil && keyTime(k) <= now; k, _ = c.Next() {
		r, err := b.get(string(k[8:]))
		if err != nil {
			return err
		}
		if r != nil && r.Receives >= q.maxRcv {
			spent = append(spent, r)
		}
	}
	for _, r := range spent {
		if err := b.kill(r, now); err != nil {
			return err
		}
	}
	return nil
}

// notify wakes every Receive that is waiting.
func (q *Queue) notify() {
	q.mu.Lock()
	close(q.wake)
	q.wake = make(chan struct{})
	q.mu.Unlock()
}

func (q *Queue) waitChan() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wake
}

// Send stores m, visible after delay, under a new random ID.
// Errors: queue.ErrInvalid, or bbolt's.
func (q *Queue) Send(ctx context.Context, m queue.Message, delay time.Duration) (string, error) {
	if err := queue.Validate(m, delay); err != nil {
		return "", fmt.Errorf("local: send: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("local: send: %w", err)
	}
	r := &record{ID: rand.Text(), Kind: m.Kind, Body: m.Body}
	err := q.db.Update(func(tx *bbolt.Tx) error {
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		return b.schedule(r, time.Now().Add(delay).UnixNano())
	})
	if err != nil {
		return "", fmt.Errorf("local: send: %w", err)
	}
	q.notify()
	return r.ID, nil
}

// Ping reports whether the database is open and holds the queue's bucket.
func (q *Queue) Ping(ctx context.Context) error {
	err := q.db.View(func(tx *bbolt.Tx) error {
		_, err := q.buckets(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("local: ping: %w", err)
	}
	return nil
}

// Receive returns up to max (at most queue.MaxReceiveBatch) visible
// messages, waiting up to wait for the first. Errors: queue.ErrInvalid for
// max < 1 or wait < 0; the context's error if it has ended before or ends
// while waiting (messages already taken are returned, not lost); bbolt's.
func (q *Queue) Receive(ctx context.Context, max int, wait time.Duration) ([]queue.Delivery, error) {
	if max < 1 || wait < 0 {
		return nil, fmt.Errorf("local: receive: %w: max %d, wait %s", queue.ErrInvalid, max, wait)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: receive: %w", err)
	}
	max = min(max, queue.MaxReceiveBatch)
	deadline := time.Now().Add(wait)
	for {
		wake := q.waitChan() // before looking, so a Send after the look still wakes us
		ds, next, err := q.take(max)
		if err != nil {
			return nil, fmt.Errorf("local: receive: %w", err)
		}
		left := time.Until(deadline)
		if len(ds) > 0 || left <= 0 {
			return ds, nil
		}
		sleep := min(left, pollInterval)
		if next > 0 {
			sleep = min(sleep, next)
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("local: receive: %w", ctx.Err())
		case <-wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// peek reports whether a message is visible now, and otherwise how long
// until the earliest becomes visible (0: none scheduled).
func (q *Queue) peek() (next time.Duration, visible bool, err error) {
	err = q.db.View(func(tx *bbolt.Tx) error {
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		k, _ := b.ready.Cursor().First()
		if k == nil {
			return nil
		}
		if at, now := keyTime(k), time.Now().UnixNano(); at > now {
			next = time.Duration(at - now)
			return nil
		}
		visible = true
		return nil
	})
	return next, visible, err
}

// take delivers up to max visible messages in one transaction. When none is
// visible, next is how long until the earliest becomes visible (0: none
// scheduled).
func (q *Queue) take(max int) (ds []queue.Delivery, next time.Duration, err error) {
	// Look first in a read-only transaction: polling an idle queue then
	// costs no write (and no fsync).
	if next, visible, err := q.peek(); err != nil || !visible {
		return nil, next, err
	}
	err = q.db.Update(func(tx *bbolt.Tx) error {
		ds, next = nil, 0
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for len(ds) < max {
			k, _ := b.ready.Cursor().First()
			if k == nil {
				return nil
			}
			if at := keyTime(k); at > now {
				next = time.Duration(at - now)
				return nil
			}
			id := string(k[8:])
			r, err := b.get(id)
			if err != nil {
				return err
			}
			if r == nil { // an index entry without its message: drop it
				if err := b.ready.Delete(k); err != nil {
					return err
				}
				continue
			}
			if r.Receives >= q.maxRcv {
				if err := b.kill(r, now); err != nil {
					return err
				}
				continue
			}
			r.Receives++
			r.Receipt = r.ID + ":" + rand.Text()
			if err := b.schedule(r, now+int64(q.vis)); err != nil {
				return err
			}
			ds = append(ds, queue.Delivery{
				Message: queue.Message{ID: r.ID, Kind: r.Kind, Body: bytes.Clone(r.Body)},
				Receipt: r.Receipt,
				Attempt: r.Receives,
			})
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return ds, next, nil
}

// current loads the message a receipt names, or nil if the receipt is no
// longer the message's current one (acknowledged, redelivered or dead).
func (b buckets) current(receipt string) (*record, error) {
	id, _, ok := strings.Cut(receipt, ":")
	if !ok || id == "" {
		return nil, fmt.Errorf("%w: malformed receipt", queue.ErrInvalid)
	}
	r, err := b.get(id)
	if err != nil || r == nil || r.Receipt != receipt || r.DeadAt != 0 {
		return nil, err
	}
	return r, nil
}

// withCurrent runs fn in one write transaction on the message whose current
// receipt is receipt; an expired receipt runs nothing.
func (q *Queue) withCurrent(receipt string, fn func(b buckets, r *record) error) error {
	return q.db.Update(func(tx *bbolt.Tx) error {
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		r, err := b.current(receipt)
		if err != nil || r == nil {
			return err
		}
		return fn(b, r)
	})
}

// Ack deletes the delivered message if d's receipt is still its current
// one; an expired receipt is ignored. Errors: queue.ErrInvalid for a
// malformed receipt, or bbolt's.
func (q *Queue) Ack(ctx context.Context, d queue.Delivery) error {
	err := q.withCurrent(d.Receipt, func(b buckets, r *record) error {
		if err := b.ready.Delete(timeKey(r.VisibleAt, r.ID)); err != nil {
			return err
		}
		return b.msgs.Delete([]byte(r.ID))
	})
	if err != nil {
		return fmt.Errorf("local: ack: %w", err)
	}
	return nil
}

// Retry makes the delivered message visible after delay (0..queue.MaxDelay)
// if d's receipt is still its current one; an expired receipt is ignored.
// Errors: queue.ErrInvalid, or bbolt's.
func (q *Queue) Retry(ctx context.Context, d queue.Delivery, delay time.Duration) error {
	if delay < 0 || delay > queue.MaxDelay {
		return fmt.Errorf("local: retry: %w: delay %s outside 0..%s", queue.ErrInvalid, delay, queue.MaxDelay)
	}
	err := q.withCurrent(d.Receipt, func(b buckets, r *record) error {
		return b.schedule(r, time.Now().Add(delay).UnixNano())
	})
	if err != nil {
		return fmt.Errorf("local: retry: %w", err)
	}
	q.notify()
	return nil
}

// ListDead returns up to max dead messages, oldest death first, without
// removing them. Errors: queue.ErrInvalid for max < 1, or bbolt's.
func (q *Queue) ListDead(ctx context.Context, max int) ([]queue.Message, error) {
	if max < 1 {
		return nil, fmt.Errorf("local: list dead: %w: max %d", queue.ErrInvalid, max)
	}
	var out []queue.Message
	err := q.db.Update(func(tx *bbolt.Tx) error {
		out = nil
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		if err := q.sweep(b, time.Now().UnixNano()); err != nil {
			return err
		}
		c := b.dead.Cursor()
		for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
			r, err := b.get(string(k[8:]))
			if err != nil {
				return err
			}
			if r != nil {
				out = append(out, queue.Message{ID: r.ID, Kind: r.Kind, Body: bytes.Clone(r.Body)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local: list dead: %w", err)
	}
	return out, nil
}

// Redrive makes every dead message visible again now, keeping its ID, with
// a fresh receive count, and returns how many moved. Errors: bbolt's.
func (q *Queue) Redrive(ctx context.Context) (int, error) {
	n := 0
	err := q.db.Update(func(tx *bbolt.Tx) error {
		n = 0
		b, err := q.buckets(tx)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		if err := q.sweep(b, now); err != nil {
			return err
		}
		var keys [][]byte
		c := b.dead.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := b.dead.Delete(k); err != nil {
				return err
			}
			r, err := b.get(string(k[8:]))
			if err != nil {
				return err
			}
			if r == nil {
				continue
			}
			r.DeadAt, r.Receives, r.Receipt = 0, 0, ""
			if err := b.schedule(r, now); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("local: redrive: %w", err)
	}
	if n > 0 {
		q.notify()
	}
	return n, nil
}
