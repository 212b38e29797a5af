// Package bolt is the store port's embedded adapter, over a bbolt file.
//
// It gives the same semantics as the DynamoDB adapter inside bbolt
// transactions: tables and indexes are created lazily on first write; the
// items of a partition are kept sorted by sort key; secondary indexes are
// maintained by the adapter in the same transaction as the item they point
// to; every write, and every whole Transact, is one bbolt update, so it is
// atomic and durable when it returns.
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
//	"counters"      itemKey(PK, SK) -> 8-byte big-endian int64
//	"index/<name>"  indexKey(index PK, index SK, itemKey) -> empty
//
// Keys never contain NUL (store.ValidateKey), so NUL separates their parts
// and byte order of the encoded keys is (PK, SK) order, with each
// partition contiguous.
const (
	bucketPrefix   = "store/"
	itemsBucket    = "items"
	countersBucket = "counters"
	indexPrefix    = "index/"
)

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
//	uvarint version
//	uvarint number of index entries, then for each (sorted by name):
//	  uvarint len, name; uvarint len, PK; uvarint len, SK
//	the value, to the end
func encodeRecord(version int64, idx map[string]store.IndexKey, value []byte) []byte {
	n := binary.MaxVarintLen64 * 2
	for name, ik := range idx {
		n += 3*binary.MaxVarintLen64 + len(name) + len(ik.PK) + len(ik.SK)
	}
	b := make([]byte, 0, n+len(value))
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
	indexes map[string]store.IndexKey
}

// decodeRecord decodes a record; the value is copied out of bbolt's memory
// only if withValue.
func decodeRecord(b []byte, withValue bool) (meta, []byte, error) {
	var m meta
	bad := func() (meta, []byte, error) { return meta{}, nil, errors.New("corrupt item record") }
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

// current loads the metadata of the item at k, or nil if it is absent.
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

func versionOf(m *meta) int64 {
	if m == nil {
		return 0
	}
	return m.version
}

// writeItem stores it over old (nil if absent) and moves its index entries;
// it returns the new version.
func writeItem(tx *bbolt.Tx, it store.Item, old *meta) (int64, error) {
	items, err := createBucket(tx, it.Table, itemsBucket)
	if err != nil {
		return 0, err
	}
	ik := itemKey(it.PK, it.SK)
	version := versionOf(old) + 1
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
	if err := items.Put(ik, encodeRecord(version, it.Indexes, it.Value)); err != nil {
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

// deleteItem removes the item at k and its index entries; old is non-nil.
func deleteItem(tx *bbolt.Tx, k store.Key, old *meta) error {
	ik := itemKey(k.PK, k.SK)
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

// Get returns the item at k (with its value, version and index entries),
// store.ErrNotFound if there is none, or store.ErrInvalid for a bad key.
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
		it.Version, it.Indexes, it.Value = m.version, m.indexes, v
		return nil
	})
	if err != nil {
		return store.Item{}, wrap("get "+k.String(), err)
	}
	return it, nil
}

// Put writes it if c holds for the current item, replacing its value and
// index entries, and returns it with its new version (1 on creation, +1
// after). The returned item shares Value and Indexes with it. Errors:
// store.ErrConditionFailed, store.ErrInvalid.
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
		if !c.Holds(old != nil, versionOf(old)) {
			return store.ErrConditionFailed
		}
		it.Version, err = writeItem(tx, it, old)
		return err
	})
	if err != nil {
		return store.Item{}, wrap("put "+it.Key.String(), err)
	}
	return it, nil
}

// Delete removes the item at k and its index entries if c holds; deleting
// an absent item under a condition that allows absence succeeds. Errors:
// store.ErrConditionFailed, store.ErrInvalid.
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
		if !c.Holds(old != nil, versionOf(old)) {
			return store.ErrConditionFailed
		}
		if old == nil {
			return nil
		}
		return deleteItem(tx, k, old)
	})
	return wrap("delete "+k.String(), err)
}

// Increment adds delta to the counter at k, creating it at 0, and returns
// the new value. Counters are kept apart from items: Get does not see them.
// Errors: store.ErrInvalid for a bad key or an overflow.
func (s *Store) Increment(ctx context.Context, k store.Key, delta int64) (int64, error) {
	if err := store.ValidateKey(k); err != nil {
		return 0, fmt.Errorf("bolt: increment: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bolt: increment %s: %w", k, err)
	}
	var n int64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := createBucket(tx, k.Table, countersBucket)
		if err != nil {
			return err
		}
		ck := itemKey(k.PK, k.SK)
		var old int64
		if raw := b.Get(ck); raw != nil {
			if len(raw) != 8 {
				return fmt.Errorf("corrupt counter at %s", k)
			}
			old = int64(binary.BigEndian.Uint64(raw))
		}
		n = old + delta
		if (delta > 0 && n < old) || (delta < 0 && n > old) {
			return fmt.Errorf("%w: counter %s overflows", store.ErrInvalid, k)
		}
		return b.Put(ck, binary.BigEndian.AppendUint64(nil, uint64(n)))
	})
	if err != nil {
		return 0, wrap("increment "+k.String(), err)
	}
	return n, nil
}

// Transact applies writes (at most store.MaxTransactWrites, to distinct
// keys) in one bbolt update. Every condition is checked against the state
// before the transaction; if one fails nothing is written and the error is
// a *store.TxError naming the first failing write (and wraps
// store.ErrConditionFailed). Errors: store.ErrConditionFailed,
// store.ErrInvalid.
func (s *Store) Transact(ctx context.Context, writes []store.Write) error {
	if err := store.ValidateTransact(writes); err != nil {
		return fmt.Errorf("bolt: transact: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: transact: %w", err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		olds := make([]*meta, len(writes))
		for i, w := range writes {
			old, err := current(tx, w.Item.Key)
			if err != nil {
				return err
			}
			if !w.Cond.Holds(old != nil, versionOf(old)) {
				return &store.TxError{Index: i}
			}
			olds[i] = old
		}
		for i, w := range writes {
			switch w.Op {
			case store.OpPut:
				if _, err := writeItem(tx, w.Item, olds[i]); err != nil {
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
// when q.Index is set, in sort-key order. Items with equal index sort keys
// are ordered by their table key. Page.Cursor is "" exactly when there are
// no more items. Errors: store.ErrInvalid for a bad query or a cursor
// that this adapter did not produce for this query.
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
		var last []byte
		for ; k != nil && bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0; k = step(c, q.Reverse) {
			if len(page.Items) == limit {
				page.Cursor = encodeCursor(last, q.Index != "")
				return nil
			}
			it, err := loadForQuery(items, q, k)
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

// loadForQuery decodes the item at table or index key k.
func loadForQuery(items *bbolt.Bucket, q store.Query, k []byte) (store.Item, error) {
	ik := k
	if q.Index != "" {
		var err error
		if ik, err = itemKeyOfIndexKey(k); err != nil {
			return store.Item{}, err
		}
	}
	var raw []byte
	if items != nil {
		raw = items.Get(ik)
	}
	if raw == nil {
		return store.Item{}, fmt.Errorf("index %s of %s has an entry for missing item %q", q.Index, q.Table, ik)
	}
	pk, sk, err := splitItemKey(ik)
	if err != nil {
		return store.Item{}, err
	}
	m, v, err := decodeRecord(raw, true)
	if err != nil {
		return store.Item{}, fmt.Errorf("%w at %s/%s/%s", err, q.Table, pk, sk)
	}
	return store.Item{Key: store.Key{Table: q.Table, PK: pk, SK: sk}, Value: v, Version: m.version, Indexes: m.indexes}, nil
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
