// Package store is the storage port: a narrow, DynamoDB-shaped key-value
// store that every domain service persists through.
//
// Items live in named tables and are addressed by a partition key (PK) and a
// sort key (SK). Every item carries an opaque encoded value and a version that
// the store maintains: 1 on creation, +1 on every put. Conditions on puts,
// deletes and transactions compare against that version, which is how callers
// get optimistic concurrency.
//
// Items and counters may expire (Item.ExpiresAt, Increment's expiresAt): from
// its expiry on, an item reads as absent everywhere (Get, Query, conditions)
// although an adapter may keep it for a while before deleting it. Expiry has
// whole-second precision; see Item.ExpiresAt.
//
// Adapters: store/bolt (embedded bbolt) and store/dynamo (DynamoDB). Both pass
// the conformance suite in store/storetest; ownership and permission rules
// live above this port, never in an adapter.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by every adapter; callers test them with errors.Is.
var (
	// ErrNotFound: Get of an absent item.
	ErrNotFound = errors.New("store: item not found")
	// ErrConditionFailed: a put, delete or transaction whose condition did
	// not hold. Nothing was written.
	ErrConditionFailed = errors.New("store: condition failed")
	// ErrInvalid: a malformed request (empty key, key or value too large,
	// expiry before 1970, too many transaction writes, unknown cursor).
	// Nothing was written.
	ErrInvalid = errors.New("store: invalid request")
)

// Limits shared by every adapter, chosen to fit DynamoDB's.
const (
	MaxPKBytes        = 1024
	MaxSKBytes        = 1024
	MaxValueBytes     = 350 * 1024
	MaxTransactWrites = 25
	MaxQueryLimit     = 1000
	DefaultQueryLimit = 100
)

// Key addresses one item.
type Key struct {
	Table string
	PK    string
	SK    string
}

func (k Key) String() string { return k.Table + "/" + k.PK + "/" + k.SK }

// IndexKey is an item's entry in one secondary index.
type IndexKey struct {
	PK string
	SK string
}

// Item is a stored record.
type Item struct {
	Key
	// Value is the caller's encoded record; the store never interprets it.
	Value []byte
	// Version is maintained by the store: ignored on Put, set on reads
	// and on the item Put returns.
	Version int64
	// Indexes places the item in the table's secondary indexes, by index
	// name (see TableSpec.Indexes). An index absent here has no entry for
	// this item. Reads return it, so a read-modify-put keeps the entries.
	// Index queries may lag a write (DynamoDB's are eventually
	// consistent): enforce uniqueness with a transaction, never an index.
	Indexes map[string]IndexKey
	// ExpiresAt is when the item expires; the zero time means never. The
	// store keeps it in whole seconds, rounding up (ExpiryUnix): Put and
	// reads return the stored second (ExpiryTime, in UTC). From that second
	// on the item is expired: Get returns ErrNotFound, Query skips it, and
	// every condition treats it as absent, so IfAbsent holds over it,
	// IfExists and IfVersion fail, and a put over it starts again at
	// version 1. Adapters delete expired items eventually (DynamoDB's TTL
	// within about two days, the bolt adapter when PurgeExpired runs), so
	// an expired item costs space, never correctness. Like Value and
	// Indexes, every put replaces it: a read-modify-put keeps it.
	ExpiresAt time.Time
}

// CondKind is what a Cond requires of the item's current state.
type CondKind int

const (
	// CondNone: no requirement.
	CondNone CondKind = iota
	// CondAbsent: the item must not exist.
	CondAbsent
	// CondExists: the item must exist.
	CondExists
	// CondVersion: the item must exist with exactly Cond.Version.
	CondVersion
)

// Cond is a write's precondition.
type Cond struct {
	Kind    CondKind
	Version int64
}

var (
	// Always is the empty condition.
	Always = Cond{}
	// IfAbsent requires that the item does not exist.
	IfAbsent = Cond{Kind: CondAbsent}
	// IfExists requires that the item exists.
	IfExists = Cond{Kind: CondExists}
)

// IfVersion requires that the item exists at version v.
func IfVersion(v int64) Cond { return Cond{Kind: CondVersion, Version: v} }

// Holds reports whether the condition holds for an item that exists at
// version current (exists=false means absent, which includes expired).
// Adapters that evaluate conditions themselves use it so the semantics are
// written once.
func (c Cond) Holds(exists bool, current int64) bool {
	switch c.Kind {
	case CondAbsent:
		return !exists
	case CondExists:
		return exists
	case CondVersion:
		return exists && current == c.Version
	default:
		return true
	}
}

// Query reads one partition of a table or of one of its indexes, ordered by
// sort key (ascending unless Reverse).
type Query struct {
	Table string
	// Index is a secondary index name, or "" for the table itself. PK and
	// the sort-key bounds then refer to the index's keys. Items with equal
	// index sort keys come back in an adapter-defined but stable order.
	Index string
	PK    string
	// SKPrefix keeps only sort keys starting with it. Cannot be combined
	// with SKFrom/SKTo.
	SKPrefix string
	// SKFrom and SKTo bound the sort key inclusively; "" leaves a side open.
	SKFrom string
	SKTo   string
	// Reverse returns items in descending sort-key order.
	Reverse bool
	// Limit caps the page size: 0 means DefaultQueryLimit, at most
	// MaxQueryLimit.
	Limit int
	// Cursor continues a previous query with the same parameters; it is
	// opaque and only valid for the adapter that produced it.
	Cursor string
}

// Page is one page of query results, expired items left out. A page holds
// fewer than Limit items only when no more follow. Cursor is "" when there
// are no more; a non-empty Cursor may still lead to an empty last page
// (DynamoDB ends a full page with a cursor even when nothing follows).
type Page struct {
	Items  []Item
	Cursor string
}

// WriteOp is the kind of one transaction write.
type WriteOp int

const (
	OpPut WriteOp = iota + 1
	OpDelete
	// OpCheck writes nothing; it only requires its condition to hold.
	OpCheck
)

// Write is one part of a transaction. For OpDelete and OpCheck only
// Item.Key is used.
type Write struct {
	Op   WriteOp
	Item Item
	Cond Cond
}

// PutWrite, DeleteWrite and CheckWrite build transaction writes.
func PutWrite(it Item, c Cond) Write  { return Write{Op: OpPut, Item: it, Cond: c} }
func DeleteWrite(k Key, c Cond) Write { return Write{Op: OpDelete, Item: Item{Key: k}, Cond: c} }
func CheckWrite(k Key, c Cond) Write  { return Write{Op: OpCheck, Item: Item{Key: k}, Cond: c} }

// Store is the storage port. Every method is safe for concurrent use.
// Expired items and counters are absent to every method (see
// Item.ExpiresAt); adapters compare expiries with their own clock.
type Store interface {
	// Get returns the item, or ErrNotFound (also for an expired item).
	Get(ctx context.Context, k Key) (Item, error)
	// Put writes the item if c holds (else ErrConditionFailed) and returns
	// it with its new version and its stored ExpiresAt.
	Put(ctx context.Context, it Item, c Cond) (Item, error)
	// Delete removes the item if c holds (else ErrConditionFailed).
	// Deleting an absent item with CondNone succeeds.
	Delete(ctx context.Context, k Key, c Cond) error
	// Query returns one page of a partition; see Query.
	Query(ctx context.Context, q Query) (Page, error)
	// Increment atomically adds delta to the counter at k and returns the
	// new value. An absent or expired counter counts from 0; one that
	// restarts that way never expires unless expiresAt says so. A
	// non-zero expiresAt sets the counter's expiry (replacing any earlier
	// one, with ExpiresAt's rounding); the zero time keeps it. A read is
	// delta 0 with the zero time. Counters live at their own keys: a key
	// used as a counter is never also Put. A counter per time window
	// (the window in the key, expiring after it) is the intended use for
	// rate limits. Errors: ErrInvalid (bad key, expiry before 1970,
	// overflow).
	Increment(ctx context.Context, k Key, delta int64, expiresAt time.Time) (int64, error)
	// Transact applies up to MaxTransactWrites writes to distinct keys,
	// all or none. If any condition fails, nothing is written and the
	// error wraps ErrConditionFailed (and is a *TxError naming the write).
	Transact(ctx context.Context, writes []Write) error
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
}

// TxError tells which write of a transaction failed its condition.
// Index is -1 when the adapter cannot tell.
type TxError struct{ Index int }

func (e *TxError) Error() string {
	if e.Index < 0 {
		return "store: transaction condition failed"
	}
	return fmt.Sprintf("store: transaction write %d: condition failed", e.Index)
}

func (e *TxError) Unwrap() error { return ErrConditionFailed }

// TableSpec declares a table and the names of its secondary indexes.
type TableSpec struct {
	Name    string
	Indexes []string
}

// ValidateKey checks a key against the shared limits.
func ValidateKey(k Key) error {
	switch {
	case k.Table == "":
		return fmt.Errorf("%w: empty table name", ErrInvalid)
	case k.PK == "":
		return fmt.Errorf("%w: empty partition key in %s", ErrInvalid, k.Table)
	case k.SK == "":
		return fmt.Errorf("%w: empty sort key in %s/%s", ErrInvalid, k.Table, k.PK)
	case len(k.PK) > MaxPKBytes:
		return fmt.Errorf("%w: partition key longer than %d bytes", ErrInvalid, MaxPKBytes)
	case len(k.SK) > MaxSKBytes:
		return fmt.Errorf("%w: sort key longer than %d bytes", ErrInvalid, MaxSKBytes)
	case strings.ContainsRune(k.PK, 0) || strings.ContainsRune(k.SK, 0):
		return fmt.Errorf("%w: key contains a NUL byte", ErrInvalid)
	}
	return nil
}

// ExpiryUnix returns the Unix second that the store keeps for an expiry:
// t rounded up to a whole second, or 0 for the zero time (never).
func ExpiryUnix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	s := t.Unix() // rounds down: Nanosecond is always in [0, 1e9)
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// ExpiryTime returns the ExpiresAt that reads return for a stored expiry
// second: that second in UTC, or the zero time for 0.
func ExpiryTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// Expired reports whether something stored with expiry second sec (0 for
// never) is expired at now, that is whether sec is at or before now.
func Expired(sec int64, now time.Time) bool {
	return sec != 0 && sec <= now.Unix()
}

// ValidateExpiry checks an expiry: the zero time, or a time that rounds to
// a second after the Unix epoch (DynamoDB's TTL is in Unix seconds).
func ValidateExpiry(t time.Time) error {
	if !t.IsZero() && ExpiryUnix(t) < 1 {
		return fmt.Errorf("%w: expiry %s is not after 1970-01-01T00:00:00Z", ErrInvalid, t.Format(time.RFC3339Nano))
	}
	return nil
}

// ValidateCounter checks the arguments of Increment other than delta.
func ValidateCounter(k Key, expiresAt time.Time) error {
	if err := ValidateKey(k); err != nil {
		return err
	}
	if err := ValidateExpiry(expiresAt); err != nil {
		return fmt.Errorf("counter %s: %w", k, err)
	}
	return nil
}

// ValidateItem checks an item's key, value size, index keys and expiry.
func ValidateItem(it Item) error {
	if err := ValidateKey(it.Key); err != nil {
		return err
	}
	if err := ValidateExpiry(it.ExpiresAt); err != nil {
		return fmt.Errorf("item %s: %w", it.Key, err)
	}
	if len(it.Value) > MaxValueBytes {
		return fmt.Errorf("%w: value of %s is %d bytes, over %d", ErrInvalid, it.Key, len(it.Value), MaxValueBytes)
	}
	for name, ik := range it.Indexes {
		if err := ValidateKey(Key{Table: name, PK: ik.PK, SK: ik.SK}); err != nil {
			return fmt.Errorf("index %q of %s: %w", name, it.Key, err)
		}
	}
	return nil
}

// ValidateQuery checks a query and returns its effective limit.
func ValidateQuery(q Query) (int, error) {
	switch {
	case q.Table == "" || q.PK == "":
		return 0, fmt.Errorf("%w: query needs a table and a partition key", ErrInvalid)
	case q.SKPrefix != "" && (q.SKFrom != "" || q.SKTo != ""):
		return 0, fmt.Errorf("%w: query has both a sort-key prefix and a range", ErrInvalid)
	case q.SKFrom != "" && q.SKTo != "" && q.SKFrom > q.SKTo:
		return 0, fmt.Errorf("%w: query range is empty (from %q > to %q)", ErrInvalid, q.SKFrom, q.SKTo)
	case q.Limit < 0 || q.Limit > MaxQueryLimit:
		return 0, fmt.Errorf("%w: query limit %d outside 0..%d", ErrInvalid, q.Limit, MaxQueryLimit)
	case q.Limit == 0:
		return DefaultQueryLimit, nil
	}
	return q.Limit, nil
}

// ValidateTransact checks a transaction's size, operations and key
// distinctness.
func ValidateTransact(writes []Write) error {
	if len(writes) == 0 || len(writes) > MaxTransactWrites {
		return fmt.Errorf("%w: a transaction has 1..%d writes, got %d", ErrInvalid, MaxTransactWrites, len(writes))
	}
	seen := make(map[Key]bool, len(writes))
	for i, w := range writes {
		var err error
		switch w.Op {
		case OpPut:
			err = ValidateItem(w.Item)
		case OpDelete, OpCheck:
			err = ValidateKey(w.Item.Key)
		default:
			err = fmt.Errorf("%w: unknown operation %d", ErrInvalid, w.Op)
		}
		if err != nil {
			return fmt.Errorf("transaction write %d: %w", i, err)
		}
		if seen[w.Item.Key] {
			return fmt.Errorf("%w: transaction writes %s twice", ErrInvalid, w.Item.Key)
		}
		seen[w.Item.Key] = true
	}
	return nil
}
