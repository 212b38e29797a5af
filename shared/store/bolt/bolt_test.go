package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/certfleet/certfleet/shared/store"
	"github.com/certfleet/certfleet/shared/store/bolt"
	"github.com/certfleet/certfleet/shared/store/storetest"
)

func openTemp(t testing.TB) (*bbolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "certfleet.db")
	db, err := bolt.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestStore(t *testing.T) {
	db, _ := openTemp(t)
	storetest.Run(t, bolt.New(db))
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "certfleet.db")
	db, err := bolt.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	s := bolt.New(db)
	k := store.Key{Table: "certs", PK: "user/1", SK: "cert/1"}
	idx := map[string]store.IndexKey{"by-expiry": {PK: "all", SK: "2026-01-01"}}
	if _, err := s.Put(ctx, store.Item{Key: k, Value: []byte("one"), Indexes: idx}, store.IfAbsent); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, store.Item{Key: k, Value: []byte("two"), Indexes: idx}, store.IfVersion(1)); err != nil {
		t.Fatal(err)
	}
	ck := store.Key{Table: "counters", PK: "ids", SK: "users"}
	if _, err := s.Increment(ctx, ck, 41, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = bolt.New(db)
	it, err := s.Get(ctx, k)
	if err != nil || string(it.Value) != "two" || it.Version != 2 || it.Indexes["by-expiry"] != idx["by-expiry"] {
		t.Fatalf("after reopen Get = %+v, %v", it, err)
	}
	p, err := s.Query(ctx, store.Query{Table: "certs", Index: "by-expiry", PK: "all"})
	if err != nil || len(p.Items) != 1 || p.Items[0].Key != k {
		t.Fatalf("after reopen index query = %+v, %v", p, err)
	}
	if n, err := s.Increment(ctx, ck, 1, time.Time{}); err != nil || n != 42 {
		t.Fatalf("after reopen Increment = %d, %v; want 42", n, err)
	}
}

func TestOpenDBLocked(t *testing.T) {
	_, path := openTemp(t)
	db, err := bolt.OpenDB(path)
	if err == nil {
		db.Close()
		t.Fatal("second OpenDB of a locked file succeeded")
	}
	if !errors.Is(err, bolterrors.ErrTimeout) || !strings.Contains(err.Error(), "in use by another certfleet process") || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenDB of a locked file: %v", err)
	}
}

func TestOpenDBMode(t *testing.T) {
	_, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Fatalf("data file mode %v, want no group or other access", perm)
	}
}

// The adapter shares the file with other adapters: it writes only under
// "store/" and leaves other buckets alone.
func TestBucketNamespace(t *testing.T) {
	db, _ := openTemp(t)
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("queue/jobs"))
		if err != nil {
			return err
		}
		return b.Put([]byte("m1"), []byte("message"))
	}); err != nil {
		t.Fatal(err)
	}
	s := bolt.New(db)
	ctx := t.Context()
	for _, table := range []string{"items", "queue/jobs", "x"} {
		k := store.Key{Table: table, PK: "p", SK: "s"}
		if _, err := s.Put(ctx, store.Item{Key: k, Value: []byte("v"), Indexes: map[string]store.IndexKey{"gsi": {PK: "g", SK: "s"}}}, store.Always); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Increment(ctx, k, 1, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	err := db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			switch {
			case string(name) == "queue/jobs":
				if n := b.Stats().KeyN; n != 1 || string(b.Get([]byte("m1"))) != "message" {
					t.Errorf("foreign bucket changed: %d keys", n)
				}
			case !strings.HasPrefix(string(name), "store/"):
				t.Errorf("top-level bucket %q outside store/", name)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The bolt adapter looks ahead, so a query's last page has no cursor even
// when it is exactly full.
func TestCursorEndsOnFullPage(t *testing.T) {
	db, _ := openTemp(t)
	s := bolt.New(db)
	ctx := t.Context()
	for _, sk := range []string{"a", "b", "c", "d"} {
		if _, err := s.Put(ctx, store.Item{Key: store.Key{Table: "t", PK: "p", SK: sk}}, store.Always); err != nil {
			t.Fatal(err)
		}
	}
	q := store.Query{Table: "t", PK: "p", Limit: 2}
	p, err := s.Query(ctx, q)
	if err != nil || len(p.Items) != 2 || p.Cursor == "" {
		t.Fatalf("first page = %+v, %v", p, err)
	}
	q.Cursor = p.Cursor
	p, err = s.Query(ctx, q)
	if err != nil || len(p.Items) != 2 || p.Cursor != "" {
		t.Fatalf("last page = %+v, %v; want 2 items and no cursor", p, err)
	}
	// A table cursor is not an index cursor, nor one for another partition.
	first, _ := s.Query(ctx, store.Query{Table: "t", PK: "p", Limit: 1})
	for _, bad := range []store.Query{
		{Table: "t", Index: "gsi", PK: "p", Cursor: first.Cursor},
		{Table: "t", PK: "q", Cursor: first.Cursor},
		{Table: "t", PK: "p", SKPrefix: "b", Cursor: first.Cursor},
	} {
		if _, err := s.Query(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Query(%+v) = %v; want ErrInvalid", bad, err)
		}
	}
}

func BenchmarkStore(b *testing.B) {
	db, _ := openTemp(b)
	storetest.Benchmark(b, bolt.New(db))
}

// bucketKeys lists the keys of bucket path (top-level name, then nested
// names) as strings; nil if the bucket does not exist.
func bucketKeys(t *testing.T, db *bbolt.DB, path ...string) []string {
	t.Helper()
	var keys []string
	err := db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(path[0]))
		for _, name := range path[1:] {
			if b == nil {
				break
			}
			b = b.Bucket([]byte(name))
		}
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPurgeExpired(t *testing.T) {
	defer bolt.SetPurgeBatch(7)()
	db, _ := openTemp(t)
	s := bolt.New(db)
	ctx := t.Context()
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	never := time.Time{}
	put := func(table, pk, sk string, exp time.Time, indexed bool) store.Key {
		t.Helper()
		k := store.Key{Table: table, PK: pk, SK: sk}
		it := store.Item{Key: k, Value: []byte(sk), ExpiresAt: exp}
		if indexed {
			it.Indexes = map[string]store.IndexKey{"gsi1": {PK: "g", SK: sk}}
		}
		if _, err := s.Put(ctx, it, store.Always); err != nil {
			t.Fatal(err)
		}
		return k
	}
	inc := func(table, sk string, exp time.Time) {
		t.Helper()
		if _, err := s.Increment(ctx, store.Key{Table: table, PK: "ctr", SK: sk}, 1, exp); err != nil {
			t.Fatal(err)
		}
	}

	// 40 expired items (half indexed) and 5 expired counters over two
	// tables, between items and counters that stay.
	expired := 0
	for i := range 20 {
		for _, table := range []string{"t1", "t2"} {
			put(table, "p", fmt.Sprintf("old/%02d", i), past, i%2 == 0)
			expired++
		}
	}
	for i := range 5 {
		inc("t1", fmt.Sprintf("old/%d", i), past)
		expired++
	}
	var keep []store.Key
	keep = append(keep, put("t1", "p", "future", future, true), put("t2", "p", "never", never, true))
	// An item whose expiry moved from the past to the future, and one
	// that lost its expiry, stay too.
	put("t1", "p", "moved", past, true)
	keep = append(keep, put("t1", "p", "moved", future, true))
	put("t2", "p", "cleared", past, false)
	keep = append(keep, put("t2", "p", "cleared", never, false))
	inc("t1", "live", future)
	inc("t1", "moved", past)
	inc("t1", "moved", future) // restarted with a future expiry
	inc("t2", "plain", never)

	// A foreign bucket of the same file is left alone.
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("queue/jobs"))
		if err != nil {
			return err
		}
		return b.Put([]byte("m1"), []byte("message"))
	}); err != nil {
		t.Fatal(err)
	}

	n, err := s.PurgeExpired(ctx, time.Now())
	if err != nil || n != expired {
		t.Fatalf("PurgeExpired = %d, %v; want %d", n, err, expired)
	}
	items1 := bucketKeys(t, db, "store/t1", "items")
	items2 := bucketKeys(t, db, "store/t2", "items")
	if want := []string{"p\x00future", "p\x00moved"}; !slices.Equal(items1, want) {
		t.Errorf("t1 items after purge %q, want %q", items1, want)
	}
	if want := []string{"p\x00cleared", "p\x00never"}; !slices.Equal(items2, want) {
		t.Errorf("t2 items after purge %q, want %q", items2, want)
	}
	if got, want := bucketKeys(t, db, "store/t1", "counters"), []string{"ctr\x00live", "ctr\x00moved"}; !slices.Equal(got, want) {
		t.Errorf("t1 counters after purge %q, want %q", got, want)
	}
	if got := bucketKeys(t, db, "store/t1", "index/gsi1"); len(got) != 2 {
		t.Errorf("t1 index after purge has %d entries, want 2: %q", len(got), got)
	}
	if got := bucketKeys(t, db, "store/t2", "index/gsi1"); len(got) != 1 {
		t.Errorf("t2 index after purge has %d entries, want 1: %q", len(got), got)
	}
	// Left in the expiry index: t1's future item, moved item, live and
	// moved counters; nothing in t2.
	if got := bucketKeys(t, db, "store/t1", "expiry"); len(got) != 4 {
		t.Errorf("t1 expiry index after purge has %d entries, want 4", len(got))
	}
	if got := bucketKeys(t, db, "store/t2", "expiry"); len(got) != 0 {
		t.Errorf("t2 expiry index after purge has %d entries, want 0", len(got))
	}
	if got := bucketKeys(t, db, "queue/jobs"); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("foreign bucket after purge: %q", got)
	}
	for _, k := range keep {
		if _, err := s.Get(ctx, k); err != nil {
			t.Errorf("Get(%s) after purge: %v", k, err)
		}
	}
	for _, q := range []store.Query{{Table: "t1", Index: "gsi1", PK: "g"}, {Table: "t2", PK: "p"}} {
		if p, err := s.Query(ctx, q); err != nil || len(p.Items) != 2 {
			t.Errorf("Query(%+v) after purge = %d items, %v; want 2", q, len(p.Items), err)
		}
	}
	if v, err := s.Increment(ctx, store.Key{Table: "t1", PK: "ctr", SK: "moved"}, 0, never); err != nil || v != 1 {
		t.Errorf("counter after purge = %d, %v; want 1", v, err)
	}

	// Nothing more is due now; two hours on, the rest with an expiry is.
	if n, err := s.PurgeExpired(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("second PurgeExpired = %d, %v; want 0", n, err)
	}
	if n, err := s.PurgeExpired(ctx, time.Now().Add(2*time.Hour)); err != nil || n != 4 {
		t.Fatalf("PurgeExpired two hours on = %d, %v; want 4", n, err)
	}
	for _, table := range []string{"store/t1", "store/t2"} {
		if got := bucketKeys(t, db, table, "expiry"); len(got) != 0 {
			t.Errorf("%s expiry index not empty: %q", table, got)
		}
	}
	if got := bucketKeys(t, db, "store/t2", "items"); len(got) != 2 {
		t.Errorf("items without expiry purged: t2 has %q", got)
	}

	// A cancelled context stops it.
	put("t1", "p", "late", past, false)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := s.PurgeExpired(cancelled, time.Now()); !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("PurgeExpired with a cancelled context = %d, %v", n, err)
	}
}

// Records written before items could expire (no expiry prefix, 8-byte
// counters) read as items and counters that never expire.
func TestRecordsWithoutExpiry(t *testing.T) {
	db, _ := openTemp(t)
	// version 3, no index entries, value "old"; counter 41.
	if err := db.Update(func(tx *bbolt.Tx) error {
		tb, err := tx.CreateBucket([]byte("store/t"))
		if err != nil {
			return err
		}
		items, err := tb.CreateBucket([]byte("items"))
		if err != nil {
			return err
		}
		if err := items.Put([]byte("p\x00s"), []byte("\x03\x00old")); err != nil {
			return err
		}
		counters, err := tb.CreateBucket([]byte("counters"))
		if err != nil {
			return err
		}
		return counters.Put([]byte("p\x00c"), []byte{0, 0, 0, 0, 0, 0, 0, 41})
	}); err != nil {
		t.Fatal(err)
	}
	s := bolt.New(db)
	ctx := t.Context()
	k := store.Key{Table: "t", PK: "p", SK: "s"}
	it, err := s.Get(ctx, k)
	if err != nil || string(it.Value) != "old" || it.Version != 3 || !it.ExpiresAt.IsZero() {
		t.Fatalf("Get of an old record = %+v, %v", it, err)
	}
	if n, err := s.Increment(ctx, store.Key{Table: "t", PK: "p", SK: "c"}, 1, time.Time{}); err != nil || n != 42 {
		t.Fatalf("Increment of an old counter = %d, %v; want 42", n, err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	if it, err = s.Put(ctx, store.Item{Key: k, Value: []byte("new"), ExpiresAt: exp}, store.IfVersion(3)); err != nil || it.Version != 4 {
		t.Fatalf("Put over an old record = %+v, %v", it, err)
	}
	if it, err = s.Get(ctx, k); err != nil || string(it.Value) != "new" || !it.ExpiresAt.Equal(exp) {
		t.Fatalf("Get after the put = %+v, %v", it, err)
	}
}
