// Package bolt is the store port's embedded adapter, over a bbolt file.
//
// It gives the same semantics as the DynamoDB adapter inside bbolt
// transactions: tables and indexes are created lazily on first write; the
// items of a partition are kept sorted by sort key; secondary indexes are
// maintained by the adapter in the same transaction as the item they point
// to; every write, and every whole Transact, is one bbolt update, so it is
// atomic and durable when it returns.
//
// Expired items and counters are invisible at once (reads compare their
// expiry with the wall clock) but stay in the file until PurgeExpired
// deletes them; the local shape runs it from its scheduler.
//
// The adapter shares its *bbolt.DB with other local adapters (the local
// queue) and keeps everything it writes under top-level buckets whose names
// start with "store/".
package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/certfleet/certfleet/shared/store"
)

// LockTimeout is how long OpenDB waits for another process to release the
// data file's lock before giving up.
const LockTimeout = time.Second

// OpenDB opens the bbolt data file at path, creating it (mode 0600, and its
// directory, mode 0700) if needed. bbolt allows one process per file: if
// another process holds it for longer than LockTimeout, OpenDB fails with an
// error that says so. The caller owns the returned DB and closes it.
func OpenDB(path string) (*bbolt.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bolt: create data directory: %w", err)
		}
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      LockTimeout,
		FreelistType: bbolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: data file %s is in use by another certfleet process (its lock was not released within %s); stop that process or use another data file: %w", path, LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	return db, nil
}

// Store is the bbolt implementation of store.Store. It is safe for
// concurrent use: reads run in parallel read transactions, writes are
// serialised by bbolt's single writer.
type Store struct {
	db *bbolt.DB
}

var _ store.Store = (*Store)(nil)

// New returns a Store over db, which the caller opened (see OpenDB) and
// keeps ownership of. New does not write to db.
func New(db *bbolt.DB) *Store { return &Store{db: db} }

// Layout. Each table is a top-level bucket "store/<table>" holding:
//
//	"items"         itemKey(PK, SK) -> record
//	"counters"      itemKey(PK, SK) -> counter
//	"index/<name>"  indexKey(index PK, index SK, itemKey) -> empty
//	"expiry"        expiryKey(second, kind, itemKey) -> empty, one entry
//	                per item or counter that has an expiry
//
// Keys never contain NUL (store.ValidateKey), so NUL separates their parts
// and byte order of the encoded keys is (PK, SK) order, with each
// partition contiguous. Expiry keys start with the big-endian second, so
// the expiry bucket is in expiry order and PurgeExpired reads only what is
// due.
const (
	bucketPrefix   = "store/"
	itemsBucket    = "items"
	countersBucket = "counters"
	indexPrefix    = "index/"
	expiryBucket   = "expiry"
)

// Kinds of expiry entries.
const (
	expiryItem    = 'i'
	expiryCounter = 'c'
)

// purgeBatch bounds how many expiry entries one PurgeExpired transaction
// handles, so that a large backlog never holds bbolt's writer for long.
var purgeBatch = 1000

func expiryKey(sec int64, kind byte, item []byte) []byte {
	b := make([]byte, 0, 9+len(item))
	b = binary.BigEndian.AppendUint64(b, uint64(sec))
	b = append(b, kind)
	return append(b, item...)
}

func splitExpiryKey(k []byte) (sec int64, kind byte, item []byte, err error) {
	if len(k) < 10 || (k[8] != expiryItem && k[8] != expiryCounter) {
		return 0, 0, nil, fmt.Errorf("malformed expiry key %q", k)
	}
	return int64(binary.BigEndian.Uint64(k)), k[8], k[9:], nil
}

// moveExpiry replaces the expiry entry of an item or counter at second was
// (0: none) by one at second now (0: none).
func moveExpiry(tx *bbolt.Tx, table string, kind byte, item []byte, was, now int64) error {
	if was == now {
		return nil
	}
	if was != 0 {
		if b := subBucket(tableBucket(tx, table), expiryBucket); b != nil {
			if err := b.Delete(expiryKey(was, kind, item)); err != nil {
				return fmt.Errorf("expiry of %s: %w", table, err)
			}
		}
	}
	if now != 0 {
		b, err := createBucket(tx, table, expiryBucket)
		if err != nil {
			return err
		}
		if err := b.Put(expiryKey(now, kind, item), []byte{}); err != nil {
			return fmt.Errorf("expiry of %s: %w", table, err)
		}
	}
	return nil
}

// A counter is its 8-byte big-endian int64 value, followed by its 8-byte
// expiry second when it has one.
func encodeCounter(n, expiry int64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(n))
	if expiry != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(expiry))
	}
	return b
}

func decodeCounter(raw []byte) (n, expiry int64, err error) {
	switch len(raw) {
	case 16:
		expiry = int64(binary.BigEndian.Uint64(raw[8:]))
		fallthrough
	case 8:
		return int64(binary.BigEndian.Uint64(raw)), expiry, nil
	}
	return 0, 0, errors.New("corrupt counter")
}

func itemKey(pk, sk string) []byte {
	b := make([]byte, 0, len(pk)+1+len(sk))
	b = append(b, pk...)
	b = append(b, 0)
	return append(b, sk...)
}

func indexKey(ik store.IndexKey, item []byte) []byte {
	b := make([]byte, 0, len(ik.PK)+len(ik.SK)+2+len(item))
	b = append(b, ik.PK...)
	b = append(b, 0)
	b = append(b, ik.SK...)
	b = append(b, 0)
	return append(b, item...)
}

// itemKeyOfIndexKey returns the item key at the end of an index key.
func itemKeyOfIndexKey(k []byte) ([]byte, error) {
	i := bytes.IndexByte(k, 0)
	if i >= 0 {
		if j := bytes.IndexByte(k[i+1:], 0); j >= 0 {
			return k[i+1+j+1:], nil
		}
	}
	return nil, fmt.Errorf("malformed index key %q", k)
}

func splitItemKey(k []byte) (pk, sk string, err error) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", "", fmt.Errorf("malformed item key %q", k)
	}
	return string(k[:i]), string(k[i+1:]), nil
}

// A record is an item's stored form:
//
//	only if the item expires: a 0 byte, then uvarint expiry second
//	uvarint version
//	uvarint number of index entries, then for each (sorted by name):
//	  uvarint len, name; uvarint len, PK; uvarint len, SK
//	the value, to the end
//
// Versions start at 1, so a record without an expiry never starts with a
// 0 byte; records written before items could expire read unchanged.
func encodeRecord(version, expiry int64, idx map[string]store.IndexKey, value []byte) []byte {
	n := binary.MaxVarintLen64*3 + 1
	for name, ik := range idx {
		n += 3*binary.MaxVarintLen64 + len(name) + len(ik.PK) + len(ik.SK)
	}
	b := make([]byte, 0, n+len(value))
	if expiry != 0 {
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(expiry))
	}
	b = binary.AppendUvarint(b, uint64(version))
	b = binary.AppendUvarint(b, uint64(len(idx)))
	names := make([]string, 0, len(idx))
	for name := range idx {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ik := idx[name]
		for _, s := range []string{name, ik.PK, ik.SK} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return append(b, value...)
}

// meta is a record without its value.
type meta struct {
	version int64
	expiry  int64 // Unix second, 0 for never
	indexes map[string]store.IndexKey
}

// recordExpiry splits a record into its expiry second (0 for never) and
// the rest.
func recordExpiry(b []byte) (int64, []byte, error) {
	if len(b) == 0 || b[0] != 0 {
		return 0, b, nil
	}
	e, n := binary.Uvarint(b[1:])
	if n <= 0 || e == 0 || e > math.MaxInt64 {
		return 0, nil, errors.New("corrupt item record")
	}
	return int64(e), b[1+n:], nil
}

// decodeRecord decodes a record; the value is copied out of bbolt's memory
// only if withValue.
func decodeRecord(b []byte, withValue bool) (meta, []byte, error) {
	var m meta
	bad := func() (meta, []byte, error) { return meta{}, nil, errors.New("corrupt item record") }
	var err error
	if m.expiry, b, err = recordExpiry(b); err != nil {
		return bad()
	}
	v, n := binary.Uvarint(b)
	if n <= 0 || v > math.MaxInt64 {
		return bad()
	}
	m.version, b = int64(v), b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return bad()
	}
	b = b[n:]
	if count > 0 {
		m.indexes = make(map[string]store.IndexKey, count)
	}
	for range count {
		var parts [3]string
		for i := range parts {
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return bad()
			}
			parts[i], b = string(b[n:n+int(l)]), b[n+int(l):]
		}
		m.indexes[parts[0]] = store.IndexKey{PK: parts[1], SK: parts[2]}
	}
	if !withValue {
		return m, nil, nil
	}
	return m, bytes.Clone(b), nil
}

func tableBucket(tx *bbolt.Tx, table string) *bbolt.Bucket {
	return tx.Bucket([]byte(bucketPrefix + table))
}

func subBucket(tb *bbolt.Bucket, name string) *bbolt.Bucket {
	if tb == nil {
		return nil
	}
	return tb.Bucket([]byte(name))
}

func createBucket(tx *bbolt.Tx, table, sub string) (*bbolt.Bucket, error) {
	tb, err := tx.CreateBucketIfNotExists([]byte(bucketPrefix + table))
	if err != nil {
		return nil, fmt.Errorf("create table %s: %w", table, err)
	}
	b, err := tb.CreateBucketIfNotExists([]byte(sub))
	if err != nil {
		return nil, fmt.Errorf("create bucket %s of table %s: %w", sub, table, err)
	}
	return b, nil
}

// current loads the metadata of the item stored at k, or nil if there is
// none; an expired item is still returned (see live).
func current(tx *bbolt.Tx, k store.Key) (*meta, error) {
	items := subBucket(tableBucket(tx, k.Table), itemsBucket)
	if items == nil {
		return nil, nil
	}
	raw := items.Get(itemKey(k.PK, k.SK))
	if raw == nil {
		return nil, nil
	}
	m, _, err := decodeRecord(raw, false)
	if err != nil {
		return nil, fmt.Errorf("%w at %s", err, k)
	}
	return &m, nil
}

// live reports whether the stored item m exists for the port at now (it is
// there and not expired), and its version if so.
func live(m *meta, now time.Time) (bool, int64) {
	if m == nil || store.Expired(m.expiry, now) {
		return false, 0
	}
	return true, m.version
}

// writeItem stores it over old (the stored item, expired or not, nil if
// none) and moves its index and expiry entries; it returns the new version:
// 1 unless old is live at now.
func writeItem(tx *bbolt.Tx, it store.Item, old *meta, now time.Time) (int64, error) {
	items, err := createBucket(tx, it.Table, itemsBucket)
	if err != nil {
		return 0, err
	}
	ik := itemKey(it.PK, it.SK)
	_, version := live(old, now)
	version++
	expiry := store.ExpiryUnix(it.ExpiresAt)
	var oldExpiry int64
	if old != nil {
		oldExpiry = old.expiry
	}
	if err := moveExpiry(tx, it.Table, expiryItem, ik, oldExpiry, expiry); err != nil {
		return 0, err
	}
	if old != nil {
		for name, was := range old.indexes {
			if now, ok := it.Indexes[name]; ok && now == was {
				continue
			}
			if err := deleteIndexEntry(tx, it.Table, name, was, ik); err != nil {
				return 0, err
			}
		}
	}
	for name, now := range it.Indexes {
		if old != nil {
			if was, ok := old.indexes[name]; ok && was == now {
				continue
			}
		}
		b, err := createBucket(tx, it.Table, indexPrefix+name)
		if err != nil {
			return 0, err
		}
		if err := b.Put(indexKey(now, ik), []byte{}); err != nil {
			return 0, fmt.Errorf("index %s of %s: %w", name, it.Key, err)
		}
	}
	if err := items.Put(ik, encodeRecord(version, expiry, it.Indexes, it.Value)); err != nil {
		return 0, fmt.Errorf("put %s: %w", it.Key, err)
	}
	return version, nil
}

func deleteIndexEntry(tx *bbolt.Tx, table, name string, ik store.IndexKey, item []byte) error {
	b := subBucket(tableBucket(tx, table), indexPrefix+name)
	if b == nil {
		return nil
	}
	if err := b.Delete(indexKey(ik, item)); err != nil {
		return fmt.Errorf("index %s of %s: %w", name, table, err)
	}
	return nil
}

// deleteItem removes the item at k and its index and expiry entries; old
// is non-nil.
func deleteItem(tx *bbolt.Tx, k store.Key, old *meta) error {
	ik := itemKey(k.PK, k.SK)
	if err := moveExpiry(tx, k.Table, expiryItem, ik, old.expiry, 0); err != nil {
		return err
	}
	for name, was := range old.indexes {
		if err := deleteIndexEntry(tx, k.Table, name, was, ik); err != nil {
			return err
		}
	}
	if err := subBucket(tableBucket(tx, k.Table), itemsBucket).Delete(ik); err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	return nil
}

// Get returns the item at k (with its value, version, index entries and
// expiry), store.ErrNotFound if there is none or it has expired, or
// store.ErrInvalid for a bad key.
func (s *Store) Get(ctx context.Context, k store.Key) (store.Item, error) {
	if err := store.ValidateKey(k); err != nil {
		return store.Item{}, fmt.Errorf("bolt: get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.Item{}, fmt.Errorf("bolt: get %s: %w", k, err)
	}
	it := store.Item{Key: k}
	err := s.db.View(func(tx *bbolt.Tx) error {
		items := subBucket(tableBucket(tx, k.Table), itemsBucket)
		if items == nil {
			return store.ErrNotFound
		}
		raw := items.Get(itemKey(k.PK, k.SK))
		if raw == nil {
			return store.ErrNotFound
		}
		m, v, err := decodeRecord(raw, true)
		if err != nil {
			return fmt.Errorf("%w at %s", err, k)
		}
		if store.Expired(m.expiry, time.Now()) {
			return store.ErrNotFound
		}
		it.Version, it.Indexes, it.Value, it.ExpiresAt = m.version, m.indexes, v, store.ExpiryTime(m.expiry)
		return nil
	})
	if err != nil {
		return store.Item{}, wrap("get "+k.String(), err)
	}
	return it, nil
}

// Put writes it if c holds for the current item (an expired one counts as
// absent), replacing its value, index entries and expiry, and returns it
// with its new version (1 on creation or over an expired item, +1 after)
// and its stored ExpiresAt. The returned item shares Value and Indexes
// with it. Errors: store.ErrConditionFailed, store.ErrInvalid.
func (s *Store) Put(ctx context.Context, it store.Item, c store.Cond) (store.Item, error) {
	if err := store.ValidateItem(it); err != nil {
		return store.Item{}, fmt.Errorf("bolt: put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.Item{}, fmt.Errorf("bolt: put %s: %w", it.Key, err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		old, err := current(tx, it.Key)
		if err != nil {
			return err
		}
		now := time.Now()
		if !c.Holds(live(old, now)) {
			return store.ErrConditionFailed
		}
		it.Version, err = writeItem(tx, it, old, now)
		return err
	})
	if err != nil {
		return store.Item{}, wrap("put "+it.Key.String(), err)
	}
	it.ExpiresAt = store.ExpiryTime(store.ExpiryUnix(it.ExpiresAt))
	return it, nil
}

// Delete removes the item at k and its index entries if c holds; deleting
// an absent (or expired) item under a condition that allows absence
// succeeds, and removes an expired one. Errors: store.ErrConditionFailed,
// store.ErrInvalid.
func (s *Store) Delete(ctx context.Context, k store.Key, c store.Cond) error {
	if err := store.ValidateKey(k); err != nil {
		return fmt.Errorf("bolt: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: delete %s: %w", k, err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		old, err := current(tx, k)
		if err != nil {
			return err
		}
		if !c.Holds(live(old, time.Now())) {
			return store.ErrConditionFailed
		}
		if old == nil {
			return nil
		}
		return deleteItem(tx, k, old)
	})
	return wrap("delete "+k.String(), err)
}

// Increment adds delta to the counter at k and returns the new value; an
// absent or expired counter counts from 0, and a non-zero expiresAt sets
// its expiry (see store.Store). Counters are kept apart from items: Get
// does not see them. Reading an expired counter (delta 0, no expiresAt)
// writes nothing. Errors: store.ErrInvalid for a bad key or expiry, or an
// overflow.
func (s *Store) Increment(ctx context.Context, k store.Key, delta int64, expiresAt time.Time) (int64, error) {
	if err := store.ValidateCounter(k, expiresAt); err != nil {
		return 0, fmt.Errorf("bolt: increment: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bolt: increment %s: %w", k, err)
	}
	setExpiry := store.ExpiryUnix(expiresAt)
	var n int64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := createBucket(tx, k.Table, countersBucket)
		if err != nil {
			return err
		}
		ck := itemKey(k.PK, k.SK)
		var old, oldExpiry, expiry int64
		restart := true
		if raw := b.Get(ck); raw != nil {
			if old, oldExpiry, err = decodeCounter(raw); err != nil {
				return fmt.Errorf("%w at %s", err, k)
			}
			if store.Expired(oldExpiry, time.Now()) {
				old = 0
			} else {
				restart, expiry = false, oldExpiry
			}
		}
		if restart && delta == 0 && setExpiry == 0 && oldExpiry != 0 {
			n = 0 // an expired counter reads 0; PurgeExpired removes it
			return nil
		}
		if setExpiry != 0 {
			expiry = setExpiry
		}
		n = old + delta
		if (delta > 0 && n < old) || (delta < 0 && n > old) {
			return fmt.Errorf("%w: counter %s overflows", store.ErrInvalid, k)
		}
		if err := moveExpiry(tx, k.Table, expiryCounter, ck, oldExpiry, expiry); err != nil {
			return err
		}
		return b.Put(ck, encodeCounter(n, expiry))
	})
	if err != nil {
		return 0, wrap("increment "+k.String(), err)
	}
	return n, nil
}

// Transact applies writes (at most store.MaxTransactWrites, to distinct
// keys) in one bbolt update. Every condition is checked against the state
// before the transaction (expired items count as absent); if one fails
// nothing is written and the error is a *store.TxError naming the first
// failing write (and wraps store.ErrConditionFailed). Errors:
// store.ErrConditionFailed, store.ErrInvalid.
func (s *Store) Transact(ctx context.Context, writes []store.Write) error {
	if err := store.ValidateTransact(writes); err != nil {
		return fmt.Errorf("bolt: transact: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: transact: %w", err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		now := time.Now()
		olds := make([]*meta, len(writes))
		for i, w := range writes {
			old, err := current(tx, w.Item.Key)
			if err != nil {
				return err
			}
			if !w.Cond.Holds(live(old, now)) {
				return &store.TxError{Index: i}
			}
			olds[i] = old
		}
		for i, w := range writes {
			switch w.Op {
			case store.OpPut:
				if _, err := writeItem(tx, w.Item, olds[i], now); err != nil {
					return err
				}
			case store.OpDelete:
				if olds[i] != nil {
					if err := deleteItem(tx, w.Item.Key, olds[i]); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return wrap("transact", err)
}

// Query returns one page of a table partition, or of an index partition
// when q.Index is set, in sort-key order, leaving out expired items. Items
// with equal index sort keys are ordered by their table key. Page.Cursor
// is "" exactly when no more (unexpired) items follow. Errors:
// store.ErrInvalid for a bad query or a cursor that this adapter did not
// produce for this query.
func (s *Store) Query(ctx context.Context, q store.Query) (store.Page, error) {
	limit, err := store.ValidateQuery(q)
	if err != nil {
		return store.Page{}, fmt.Errorf("bolt: query: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.Page{}, fmt.Errorf("bolt: query: %w", err)
	}
	lo, hi := bounds(q)
	if q.Cursor != "" {
		after, err := decodeCursor(q.Cursor, q.Index != "")
		if err != nil || bytes.Compare(after, lo) < 0 || bytes.Compare(after, hi) >= 0 {
			return store.Page{}, fmt.Errorf("bolt: query: %w: cursor does not belong to this query", store.ErrInvalid)
		}
		if q.Reverse {
			hi = after
		} else {
			lo = append(after, 0) // the smallest key after it
		}
	}

	var page store.Page
	err = s.db.View(func(tx *bbolt.Tx) error {
		tb := tableBucket(tx, q.Table)
		items := subBucket(tb, itemsBucket)
		src := items
		if q.Index != "" {
			src = subBucket(tb, indexPrefix+q.Index)
		}
		if src == nil {
			return nil
		}
		c := src.Cursor()
		var k []byte
		if q.Reverse {
			if k, _ = c.Seek(hi); k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
		} else {
			k, _ = c.Seek(lo)
		}
		now := time.Now()
		var last []byte
		for ; k != nil && bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0; k = step(c, q.Reverse) {
			ik, raw, err := recordForQuery(items, q, k)
			if err != nil {
				return err
			}
			expiry, _, err := recordExpiry(raw)
			if err != nil {
				return fmt.Errorf("%w at %s/%q", err, q.Table, ik)
			}
			if store.Expired(expiry, now) {
				continue
			}
			if len(page.Items) == limit { // a live item follows a full page
				page.Cursor = encodeCursor(last, q.Index != "")
				return nil
			}
			it, err := decodeForQuery(q.Table, ik, raw)
			if err != nil {
				return err
			}
			page.Items = append(page.Items, it)
			last = k
		}
		return nil
	})
	if err != nil {
		return store.Page{}, wrap("query", err)
	}
	return page, nil
}

func step(c *bbolt.Cursor, reverse bool) []byte {
	var k []byte
	if reverse {
		k, _ = c.Prev()
	} else {
		k, _ = c.Next()
	}
	return k
}

// recordForQuery returns the item key and stored record that table or
// index key k stands for.
func recordForQuery(items *bbolt.Bucket, q store.Query, k []byte) (ik, raw []byte, err error) {
	ik = k
	if q.Index != "" {
		if ik, err = itemKeyOfIndexKey(k); err != nil {
			return nil, nil, err
		}
	}
	if items != nil {
		raw = items.Get(ik)
	}
	if raw == nil {
		return nil, nil, fmt.Errorf("index %s of %s has an entry for missing item %q", q.Index, q.Table, ik)
	}
	return ik, raw, nil
}

// decodeForQuery decodes the record raw stored at item key ik of table.
func decodeForQuery(table string, ik, raw []byte) (store.Item, error) {
	pk, sk, err := splitItemKey(ik)
	if err != nil {
		return store.Item{}, err
	}
	m, v, err := decodeRecord(raw, true)
	if err != nil {
		return store.Item{}, fmt.Errorf("%w at %s/%s/%s", err, table, pk, sk)
	}
	return store.Item{
		Key:   store.Key{Table: table, PK: pk, SK: sk},
		Value: v, Version: m.version, Indexes: m.indexes, ExpiresAt: store.ExpiryTime(m.expiry),
	}, nil
}

// bounds returns the half-open key range [lo, hi) that q selects, for
// table keys (PK NUL SK) and index keys (PK NUL SK NUL item key) alike.
func bounds(q store.Query) (lo, hi []byte) {
	part := append([]byte(q.PK), 0)
	cat := func(parts ...string) []byte {
		b := slices.Clone(part)
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	switch {
	case q.SKPrefix != "":
		lo = cat(q.SKPrefix)
		hi = successor(lo)
	default:
		lo = cat(q.SKFrom)
		if q.SKTo != "" {
			// Every sort key <= SKTo encodes below SKTo+"\x01"
			// (sort keys hold no NUL), every greater one at or above.
			hi = cat(q.SKTo, "\x01")
		} else {
			hi = successor(part)
		}
	}
	return lo, hi
}

// successor returns the smallest byte string greater than every string
// that has b as a prefix. b ends in a NUL or a prefix after it, so one
// exists.
func successor(b []byte) []byte {
	s := slices.Clone(b)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] < 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	panic("bolt: no successor") // unreachable: b contains a NUL
}

// A cursor is base64url of a tag byte (table or index query) and the last
// returned key.
const (
	cursorTable = 't'
	cursorIndex = 'i'
)

func encodeCursor(k []byte, index bool) string {
	tag := byte(cursorTable)
	if index {
		tag = cursorIndex
	}
	return base64.RawURLEncoding.EncodeToString(append([]byte{tag}, k...))
}

func decodeCursor(s string, index bool) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	want := byte(cursorTable)
	if index {
		want = cursorIndex
	}
	if len(b) < 2 || b[0] != want {
		return nil, errors.New("wrong cursor kind")
	}
	return b[1:], nil
}

// PurgeExpired deletes the items (with their index entries) and counters
// whose expiry is at or before now, in every table of the store, and
// returns how many it deleted. Expired data is already invisible, so this
// only reclaims space; it is safe to run at any time and concurrently with
// other use. It works in bbolt updates of at most a bounded number of
// entries each, so other writers wait for one short batch at a time, and
// stops early with ctx's error (the count then says what was deleted).
func (s *Store) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	cutoff := now.Unix()
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("bolt: purge expired: %w", err)
		}
		var n int
		var more bool
		err := s.db.Update(func(tx *bbolt.Tx) error {
			var err error
			n, more, err = purgeBatchTx(tx, cutoff, purgeBatch)
			return err
		})
		if err != nil {
			return total, wrap("purge expired", err)
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// purgeBatchTx handles up to budget expiry entries at or before second
// cutoff, table by table, and reports how many items and counters it
// deleted and whether it stopped for the budget.
func purgeBatchTx(tx *bbolt.Tx, cutoff int64, budget int) (deleted int, more bool, err error) {
	// The table names first, so no cursor is open over what changes.
	var tables []string
	root := tx.Cursor()
	prefix := []byte(bucketPrefix)
	for name, _ := root.Seek(prefix); name != nil && bytes.HasPrefix(name, prefix); name, _ = root.Next() {
		tables = append(tables, string(name[len(prefix):]))
	}
	for _, table := range tables {
		eb := subBucket(tableBucket(tx, table), expiryBucket)
		if eb == nil {
			continue
		}
		// Collect first: deleting moves entries under a live cursor.
		var due [][]byte
		c := eb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) > cutoff {
				break
			}
			if len(due) == budget {
				more = true
				break
			}
			due = append(due, bytes.Clone(k))
		}
		for _, k := range due {
			n, err := purgeEntry(tx, table, k)
			if err != nil {
				return deleted, false, err
			}
			deleted += n
		}
		if budget -= len(due); more || budget == 0 {
			return deleted, true, nil
		}
	}
	return deleted, false, nil
}

// purgeEntry deletes what expiry entry k of table names, if it still
// expires at that second, and the entry; it returns 1 if it deleted an
// item or counter.
func purgeEntry(tx *bbolt.Tx, table string, k []byte) (int, error) {
	sec, kind, ik, err := splitExpiryKey(k)
	if err != nil {
		return 0, fmt.Errorf("table %s: %w", table, err)
	}
	tb := tableBucket(tx, table)
	if kind == expiryCounter {
		cb := subBucket(tb, countersBucket)
		var raw []byte
		if cb != nil {
			raw = cb.Get(ik)
		}
		if raw != nil {
			_, expiry, err := decodeCounter(raw)
			if err != nil {
				return 0, fmt.Errorf("%w at %s/%q", err, table, ik)
			}
			if expiry == sec {
				if err := cb.Delete(ik); err != nil {
					return 0, fmt.Errorf("delete counter %s/%q: %w", table, ik, err)
				}
				return 1, subBucket(tb, expiryBucket).Delete(k)
			}
		}
		return 0, subBucket(tb, expiryBucket).Delete(k) // stale entry
	}
	pk, sk, err := splitItemKey(ik)
	if err != nil {
		return 0, fmt.Errorf("table %s: %w", table, err)
	}
	key := store.Key{Table: table, PK: pk, SK: sk}
	m, err := current(tx, key)
	if err != nil {
		return 0, err
	}
	if m != nil && m.expiry == sec {
		return 1, deleteItem(tx, key, m) // removes the entry too
	}
	return 0, subBucket(tb, expiryBucket).Delete(k) // stale entry
}

// Ping runs an empty read transaction.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: ping: %w", err)
	}
	return wrap("ping", s.db.View(func(*bbolt.Tx) error { return nil }))
}

// wrap prefixes err with the adapter and operation; the port's sentinel
// errors stay reachable with errors.Is and errors.As.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("bolt: %s: %w", op, err)
}
