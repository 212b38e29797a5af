package devices

// The per-device update signal stream (cert-ctrl device protocol §2.1-2.2).
//
// Store layout (table Table, one partition per device):
//
//	stream#<device>  <cursor>  one signal {"type","ts_ms","ref","prev"},
//	                           expiring Retention after it was written
//	stream#<device>  head      {"last","ts_ms","closed"}: the newest cursor,
//	                           the newest ts_ms and whether the device is gone
//
// A cursor is "<unix ms, 13 digits>-<seq, 4 digits>", e.g.
// "1736900123421-0000": URL-safe, fixed-width, so sort-key order is cursor
// order, and every entry sort key sorts before "head" (digits < 'h'). The
// empty stream's cursor is "0-0", which sorts before every entry. An
// incoming cursor may drop the zero padding ("1736900123421-0" is the same
// cursor).
//
// Signal reads the head and writes, in one transaction, the new entry
// (IfAbsent) and the head (IfVersion of what it read, IfAbsent when there
// was none), retrying when another writer won; in one process the writers
// of one device also take a striped mutex, so they do not retry against
// each other. That makes cursors unique and ordered across processes. A
// new cursor takes the current millisecond, or the head's when the clock is
// not past it, with the next seq. ts_ms is the cursor's millisecond, bumped
// to one past the head's ts_ms when needed, so ts_ms strictly increases per
// device: no two signals of one device share a ts_ms, whatever their type
// (the agent de-duplicates by type + ":" + ts_ms).
//
// Each entry records its predecessor's cursor ("prev"). After reads, in one
// Query, what follows the cursor up to and including the head: sort keys
// from cursor+"~" (every key after the cursor, not the cursor itself), limit
// plus one items. An empty poll is that one read (it returns only the head).
// The cursor was trimmed when the first entry returned has a prev after the
// cursor (entries in between expired), or when nothing follows it but the
// head says the stream went further and that entry has had time to expire
// (a young missing entry is a write the read raced, answered as "nothing
// new"), or when the cursor is after the head (a stream reset under the
// agent).
//
// Close (for a deleted device) marks the head closed; a later read sees it
// in the same single query and answers Unauthorized, and Signal drops
// signals for it. The closed head expires after Retention, like the last
// entries.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Stream defaults and bounds.
const (
	DefaultStreamRetention = 7 * 24 * time.Hour
	DefaultStreamRecheck   = time.Second
	DefaultStreamWaiters   = 8
	// DefaultPollInterval is what the updates route sends as
	// X-Poll-Interval: a signal reaches a polling agent within a minute,
	// at one store read per device per minute.
	DefaultPollInterval = 60 * time.Second
	DefaultStreamLimit  = 20
	MaxStreamLimit      = 100
	// StreamStart is the cursor of the stream's beginning.
	StreamStart = "0-0"
)

// StreamConfig tunes a Stream.
type StreamConfig struct {
	// Retention is how long an entry is kept (DefaultStreamRetention).
	Retention time.Duration
	// Recheck is how often a long poll re-reads the store when nothing
	// woke it: signals written by another process (DefaultStreamRecheck).
	Recheck time.Duration
	// MaxWaiters bounds the long polls held per device in this process;
	// polls over it are answered at once (DefaultStreamWaiters).
	MaxWaiters int
	// PollInterval is the delay the updates route advises between polls
	// (X-Poll-Interval; DefaultPollInterval).
	PollInterval time.Duration
	// Now stamps cursors and expiries (time.Now).
	Now func() time.Time
}

// StreamSignal is one signal as the agent reads it (protocol §2.2).
type StreamSignal struct {
	Type string         `json:"type"`
	TsMs int64          `json:"ts_ms"`
	Ref  map[string]any `json:"ref"`
}

// StreamPage is what follows a cursor: the signals, oldest first, and the
// cursor to resume after them.
type StreamPage struct {
	Cursor  string         `json:"cursor"`
	Signals []StreamSignal `json:"signals"`
}

// ErrCursorTrimmed matches (errors.Is) a *CursorTrimmedError.
var ErrCursorTrimmed = errors.New("devices: cursor trimmed")

// CursorTrimmedError is After's answer to a cursor whose successors the
// stream no longer keeps: the agent must resync in full and poll again
// without a cursor. It unwraps to an apperr Conflict.
type CursorTrimmedError struct {
	Cursor string
	// EarliestRetained is the oldest entry still kept after the cursor,
	// or, when none is, the stream's head (or "0-0").
	EarliestRetained string
}

func (e *CursorTrimmedError) Error() string {
	return fmt.Sprintf("devices: signals after cursor %s are no longer kept (earliest retained %s); resync in full", e.Cursor, e.EarliestRetained)
}

// Is makes errors.Is(err, ErrCursorTrimmed) hold.
func (e *CursorTrimmedError) Is(target error) bool { return target == ErrCursorTrimmed }

// Unwrap gives the application error the envelope shows.
func (e *CursorTrimmedError) Unwrap() error {
	return apperr.New(apperr.Conflict, "cursor %s is older than the earliest retained update %s; do a full resync", e.Cursor, e.EarliestRetained)
}

// Stream is every device's update signal stream. Safe for concurrent use;
// several Streams over one store (Lambda instances) agree, though only the
// Stream that wrote a signal wakes its long polls at once (the others
// re-read every Recheck).
type Stream struct {
	st  store.Store
	cfg StreamConfig

	locks [64]sync.Mutex // Signal's writers, striped by device

	mu      sync.Mutex
	waiters map[int64]*streamWaitSet
	waiting int
}

var _ Signaler = (*Stream)(nil)

// NewStream returns the stream over st.
func NewStream(st store.Store, cfg StreamConfig) *Stream {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultStreamRetention
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultStreamRecheck
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = DefaultStreamWaiters
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Stream{st: st, cfg: cfg, waiters: map[int64]*streamWaitSet{}}
}

// PollInterval is the delay between polls the route advises.
func (s *Stream) PollInterval() time.Duration { return s.cfg.PollInterval }

const streamHeadSK = "head"

// streamHead is the head record.
type streamHead struct {
	Last   string `json:"last"`
	TsMs   int64  `json:"ts_ms"`
	Closed bool   `json:"closed,omitempty"`
}

// streamEntry is a stored signal.
type streamEntry struct {
	Type string         `json:"type"`
	TsMs int64          `json:"ts_ms"`
	Ref  map[string]any `json:"ref"`
	Prev string         `json:"prev"`
}

func streamPK(deviceID int64) string { return "stream#" + strconv.FormatInt(deviceID, 10) }

func streamHeadKey(deviceID int64) store.Key {
	return store.Key{Table: Table, PK: streamPK(deviceID), SK: streamHeadSK}
}

// streamMaxSeq is the largest seq; past it the cursor takes the next ms.
const streamMaxSeq = 9999

func streamCursor(ms, seq int64) string {
	if ms == 0 && seq == 0 {
		return StreamStart
	}
	return fmt.Sprintf("%013d-%04d", ms, seq)
}

// streamParse reads a cursor, "<1-13 digits>-<1-4 digits>": "" is the
// start. ok is false when it is malformed.
func streamParse(c string) (ms, seq int64, ok bool) {
	if c == "" {
		return 0, 0, true
	}
	a, b, found := strings.Cut(c, "-")
	if !found || !streamDigits(a, 13) || !streamDigits(b, 4) {
		return 0, 0, false
	}
	ms, _ = strconv.ParseInt(a, 10, 64)
	seq, _ = strconv.ParseInt(b, 10, 64)
	return ms, seq, true
}

// streamDigits reports whether s is 1 to n ASCII digits.
func streamDigits(s string, n int) bool {
	if len(s) == 0 || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// streamAttempts bounds writeHead's retries when another process writes
// the same device's head.
const streamAttempts = 20

// Signal appends a signal to the device's stream (Signaler) and wakes its
// long polls. A closed device's signals are dropped. Errors: Invalid for a
// bad device id or an empty type; the store's.
func (s *Stream) Signal(ctx context.Context, userID, deviceID int64, typ string, ref map[string]any) error {
	if deviceID <= 0 {
		return apperr.InvalidField("device_id", "must be a positive integer")
	}
	if typ == "" {
		return apperr.InvalidField("type", "is required")
	}
	if ref == nil {
		ref = map[string]any{}
	}
	return s.writeHead(ctx, deviceID, "signal", func(h streamHead, headCond store.Cond) ([]store.Write, error) {
		if h.Closed {
			return nil, nil
		}
		now := s.cfg.Now()
		ms, seq := now.UnixMilli(), int64(0)
		if lms, lseq, ok := streamParse(h.Last); ok && ms <= lms {
			ms, seq = lms, lseq+1
			if seq > streamMaxSeq {
				ms, seq = ms+1, 0
			}
		}
		id := streamCursor(ms, seq)
		prev := h.Last
		if prev == "" {
			prev = StreamStart
		}
		e := streamEntry{Type: typ, TsMs: max(ms, h.TsMs+1), Ref: ref, Prev: prev}
		entry, err := store.JSONItem(store.Key{Table: Table, PK: streamPK(deviceID), SK: id}, e)
		if err != nil {
			return nil, err
		}
		entry.ExpiresAt = now.Add(s.cfg.Retention)
		head, err := store.JSONItem(streamHeadKey(deviceID), streamHead{Last: id, TsMs: e.TsMs})
		if err != nil {
			return nil, err
		}
		return []store.Write{store.PutWrite(head, headCond), store.PutWrite(entry, store.IfAbsent)}, nil
	})
}

// writeHead reads the device's stream head and commits the writes build
// makes of it (headCond: the head is still what was read), retrying with
// a short backoff while other processes write the head; no writes means
// nothing to do. It holds the device's lock, so writers in one process
// do not race each other, and wakes the device's polls.
func (s *Stream) writeHead(ctx context.Context, deviceID int64, what string, build func(h streamHead, headCond store.Cond) ([]store.Write, error)) error {
	mu := &s.locks[uint64(deviceID)%uint64(len(s.locks))]
	mu.Lock()
	defer mu.Unlock()
	for range streamAttempts {
		var h streamHead
		cond := store.IfAbsent
		it, err := store.GetJSON(ctx, s.st, streamHeadKey(deviceID), &h)
		switch {
		case err == nil:
			cond = store.IfVersion(it.Version)
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("devices: %s device %d: read stream head: %w", what, deviceID, err)
		}
		writes, err := build(h, cond)
		if err != nil || len(writes) == 0 {
			return err
		}
		err = s.st.Transact(ctx, writes)
		if err == nil {
			s.streamWake(deviceID)
			return nil
		}
		if !errors.Is(err, store.ErrConditionFailed) {
			return fmt.Errorf("devices: %s device %d: %w", what, deviceID, err)
		}
		if err := streamBackoff(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("devices: %s device %d: the stream head kept changing under %d attempts", what, deviceID, streamAttempts)
}

// streamBackoff waits a moment before another attempt against a head that
// another process wrote.
func streamBackoff(ctx context.Context) error {
	t := time.NewTimer(time.Duration(1+rand.IntN(5)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close marks a deleted device's stream closed: its polls answer
// Unauthorized (in the same single read as an empty poll) and its signals
// are dropped. The device registry calls it when it deletes a device; the
// closed head and the last entries expire after Retention. Errors: the
// store's.
func (s *Stream) Close(ctx context.Context, deviceID int64) error {
	return s.writeHead(ctx, deviceID, "close the stream of", func(h streamHead, headCond store.Cond) ([]store.Write, error) {
		h.Closed = true
		head, err := store.JSONItem(streamHeadKey(deviceID), h)
		if err != nil {
			return nil, err
		}
		head.ExpiresAt = s.cfg.Now().Add(s.cfg.Retention)
		return []store.Write{store.PutWrite(head, headCond)}, nil
	})
}

// After returns up to limit signals that follow cursor ("" or "0-0": the
// start) on the device's stream, in one store read. With none, the page's
// cursor is the cursor again (from the start: the head, or "0-0"). Errors:
// Invalid naming cursor or limit; *CursorTrimmedError (ErrCursorTrimmed) for
// a cursor whose successors expired or that the stream never reached;
// Unauthorized for a closed (deleted) device; the store's.
func (s *Stream) After(ctx context.Context, deviceID int64, cursor string, limit int) (StreamPage, error) {
	if deviceID <= 0 {
		return StreamPage{}, apperr.InvalidField("device_id", "must be a positive integer")
	}
	if limit < 1 || limit > MaxStreamLimit {
		return StreamPage{}, apperr.InvalidField("limit", "must be an integer from 1 to %d", MaxStreamLimit)
	}
	ms, seq, ok := streamParse(cursor)
	if !ok {
		return StreamPage{}, apperr.InvalidField("cursor", "must be a cursor this server returned, like 1736900123421-0000, or 0-0")
	}
	from := streamCursor(ms, seq)
	q := store.Query{Table: Table, PK: streamPK(deviceID), Limit: limit + 1}
	if from != StreamStart {
		q.SKFrom = from + "~" // every sort key after from, not from itself
	}
	res, err := s.st.Query(ctx, q)
	if err != nil {
		return StreamPage{}, fmt.Errorf("devices: read stream of device %d: %w", deviceID, err)
	}
	var (
		head    *streamHead // nil when the page did not reach it, or there is none
		entries []streamEntry
		ids     []string
	)
	for _, it := range res.Items {
		if it.SK == streamHeadSK {
			head = new(streamHead)
			if err := store.DecodeJSON(it, head); err != nil {
				return StreamPage{}, err
			}
			continue
		}
		var e streamEntry
		if err := store.DecodeJSON(it, &e); err != nil {
			return StreamPage{}, err
		}
		entries, ids = append(entries, e), append(ids, it.SK)
	}
	if head != nil && head.Closed {
		return StreamPage{}, apperr.New(apperr.Unauthorized, "device %d has been deleted; its access token is no longer valid", deviceID)
	}
	if from != StreamStart {
		if err := s.streamCheckGap(from, head, entries, ids); err != nil {
			return StreamPage{}, err
		}
	}
	page := StreamPage{Cursor: from, Signals: []StreamSignal{}}
	if from == StreamStart && head != nil && len(entries) == 0 {
		page.Cursor = head.Last // everything kept was read; resume at the head
	}
	if len(entries) > limit {
		entries, ids = entries[:limit], ids[:limit]
	}
	for i, e := range entries {
		if e.Ref == nil {
			e.Ref = map[string]any{}
		}
		page.Signals = append(page.Signals, StreamSignal{Type: e.Type, TsMs: e.TsMs, Ref: e.Ref})
		page.Cursor = ids[i]
	}
	return page, nil
}

// streamCheckGap decides whether the signals after from (not the start)
// are still all kept.
func (s *Stream) streamCheckGap(from string, head *streamHead, entries []streamEntry, ids []string) error {
	if len(entries) > 0 {
		if entries[0].Prev > from { // entries between from and the first one expired
			return &CursorTrimmedError{Cursor: from, EarliestRetained: ids[0]}
		}
		return nil
	}
	if head == nil { // a stream that never had a signal, or a cursor of another stream
		return &CursorTrimmedError{Cursor: from, EarliestRetained: StreamStart}
	}
	switch {
	case head.Last == from:
		return nil // the current head: nothing new
	case head.Last < from: // after the head: the stream was reset under the agent
		return &CursorTrimmedError{Cursor: from, EarliestRetained: head.Last}
	}
	// The head is past from yet nothing follows from: either entries
	// expired, or the read raced the newest entry's write (DynamoDB's
	// Query may see a transaction's head before its entry). An entry
	// younger than Retention (less a second of expiry rounding and clock
	// skew) cannot have expired.
	lms, _, _ := streamParse(head.Last)
	if s.cfg.Now().UnixMilli()-lms < (s.cfg.Retention - time.Second).Milliseconds() {
		return nil
	}
	return &CursorTrimmedError{Cursor: from, EarliestRetained: head.Last}
}

// Wait is After held up to wait for a signal: it returns as soon as a
// signal follows the cursor (woken at once by this Stream's Signal,
// otherwise re-reading every Recheck), when wait passes, or when ctx ends
// (an empty page then). wait <= 0 is After. Each read is one store read.
// Errors: After's.
func (s *Stream) Wait(ctx context.Context, deviceID int64, cursor string, limit int, wait time.Duration) (StreamPage, error) {
	if wait <= 0 {
		return s.After(ctx, deviceID, cursor, limit)
	}
	deadline := time.Now().Add(wait)
	for {
		// Subscribe before reading: a signal written after the read
		// wakes this poll; one written before it is in the read.
		woken, release := s.streamSubscribe(deviceID)
		page, err := s.After(ctx, deviceID, cursor, limit)
		remaining := time.Until(deadline)
		if err != nil || len(page.Signals) > 0 || woken == nil || remaining <= 0 {
			release()
			return page, err
		}
		t := time.NewTimer(min(remaining, s.cfg.Recheck))
		select {
		case <-woken:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			release()
			return page, nil
		}
		t.Stop()
		release()
	}
}

// Waiting is how many long polls this Stream holds now (for metrics and
// tests).
func (s *Stream) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// streamWaitSet is the long polls of one device: Signal closes ch, waking
// them all, and drops the set.
type streamWaitSet struct {
	ch chan struct{}
	n  int
}

// streamSubscribe registers a long poll of the device. It returns the
// channel that a signal closes (nil when the device has MaxWaiters polls
// held already) and the release that must follow.
func (s *Stream) streamSubscribe(deviceID int64) (<-chan struct{}, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiters[deviceID]
	if w == nil {
		w = &streamWaitSet{ch: make(chan struct{})}
		s.waiters[deviceID] = w
	}
	if w.n >= s.cfg.MaxWaiters {
		return nil, func() {}
	}
	w.n++
	s.waiting++
	return w.ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.waiting--
		if w.n--; w.n == 0 && s.waiters[deviceID] == w {
			delete(s.waiters, deviceID)
		}
	}
}

// streamWake wakes the device's long polls.
func (s *Stream) streamWake(deviceID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.waiters[deviceID]; w != nil {
		close(w.ch)
		delete(s.waiters, deviceID)
	}
}
