package bolt_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if _, err := s.Increment(ctx, ck, 41); err != nil {
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
	if n, err := s.Increment(ctx, ck, 1); err != nil || n != 42 {
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
		if _, err := s.Increment(ctx, k, 1); err != nil {
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
