// Package storetest is the conformance suite for the store port: every
// adapter's tests call Run (and Benchmark) on a live store, so all adapters are
// held to one written-down set of semantics.
//
// The suite shares one store between its subtests, which run in parallel.
// Every subtest works under its own random partition-key prefix and never
// assumes a table is empty, so the same store (for DynamoDB, the same tables)
// can be reused across runs.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/store"
)

// Tables are the tables (and their secondary indexes) the suite uses. An
// adapter that cannot create tables lazily creates exactly these before
// calling Run or Benchmark.
var Tables = []store.TableSpec{
	{Name: itemsTable, Indexes: []string{gsi1, gsi2}},
	{Name: otherTable},
}

const (
	itemsTable = "items"
	otherTable = "other"
	gsi1       = "gsi1"
	gsi2       = "gsi2"
)

// indexSettle bounds how long the suite waits for a secondary-index query to
// reflect earlier writes. Local adapters are immediately consistent and never
// wait; DynamoDB global secondary indexes are eventually consistent.
const indexSettle = 5 * time.Second

// Run runs the conformance suite against s. It returns when every subtest
// has finished, so the caller may close s afterwards.
func Run(t *testing.T, s store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*fixture)
	}{
		{"Ping", testPing},
		{"GetAbsent", testGetAbsent},
		{"PutGetRoundtrip", testPutGetRoundtrip},
		{"ValueIsolation", testValueIsolation},
		{"TableIsolation", testTableIsolation},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfVersion", testPutIfVersion},
		{"PutIfExists", testPutIfExists},
		{"Delete", testDelete},
		{"DeleteAbsent", testDeleteAbsent},
		{"Query", testQuery},
		{"QueryPaging", testQueryPaging},
		{"QueryEmpty", testQueryEmpty},
		{"Index", testIndex},
		{"IndexEqualSortKeys", testIndexEqualSortKeys},
		{"IndexPaging", testIndexPaging},
		{"Increment", testIncrement},
		{"IncrementConcurrent", testIncrementConcurrent},
		{"Transact25", testTransact25},
		{"TransactConditionFails", testTransactConditionFails},
		{"TransactMixed", testTransactMixed},
		{"TransactIndexes", testTransactIndexes},
		{"Invalid", testInvalid},
		{"Limits", testLimits},
		{"ConcurrentPutIfAbsent", testConcurrentPutIfAbsent},
		{"ConcurrentPutIfVersion", testConcurrentPutIfVersion},
		{"ConcurrentTransact", testConcurrentTransact},
		{"ExpiresAtRoundtrip", testExpiresAtRoundtrip},
		{"ExpiredGet", testExpiredGet},
		{"ExpiresWhileStored", testExpiresWhileStored},
		{"ExpiredConditions", testExpiredConditions},
		{"ExpiredTransact", testExpiredTransact},
		{"ExpiredQuery", testExpiredQuery},
		{"ExpiredQueryPaging", testExpiredQueryPaging},
		{"ExpiresDuringPaging", testExpiresDuringPaging},
		{"IncrementExpiry", testIncrementExpiry},
		{"IncrementExpiresWhileCounting", testIncrementExpiresWhileCounting},
		{"IncrementConcurrentRestart", testIncrementConcurrentRestart},
		{"InvalidExpiry", testInvalidExpiry},
	}
	// The group waits for its parallel subtests, so Run is synchronous.
	t.Run("conformance", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(newFixture(t, s))
			})
		}
	})
}

// Benchmark measures the operations that dominate the services' hot paths:
// Get, a conditional Put (PutIfVersion) and a Query of a 100-item partition
// (Query100). Each reports ops/s.
func Benchmark(b *testing.B, s store.Store) {
	b.Run("Get", func(b *testing.B) {
		ctx := b.Context()
		k := store.Key{Table: itemsTable, PK: randomPrefix() + "#bench-get", SK: "item"}
		if _, err := s.Put(ctx, store.Item{Key: k, Value: benchValue()}, store.Always); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		reportOps(b)
	})
	b.Run("PutIfVersion", func(b *testing.B) {
		ctx := b.Context()
		k := store.Key{Table: itemsTable, PK: randomPrefix() + "#bench-put", SK: "item"}
		it, err := s.Put(ctx, store.Item{Key: k, Value: benchValue()}, store.IfAbsent)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			it, err = s.Put(ctx, it, store.IfVersion(it.Version))
			if err != nil {
				b.Fatal(err)
			}
		}
		reportOps(b)
	})
	b.Run("Query100", func(b *testing.B) {
		ctx := b.Context()
		pk := randomPrefix() + "#bench-query"
		for i := range 100 {
			k := store.Key{Table: itemsTable, PK: pk, SK: fmt.Sprintf("item/%03d", i)}
			if _, err := s.Put(ctx, store.Item{Key: k, Value: benchValue()}, store.Always); err != nil {
				b.Fatal(err)
			}
		}
		q := store.Query{Table: itemsTable, PK: pk, Limit: 100}
		b.ReportAllocs()
		for b.Loop() {
			p, err := s.Query(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Items) != 100 {
				b.Fatalf("query returned %d items, want 100", len(p.Items))
			}
		}
		reportOps(b)
	})
}

func reportOps(b *testing.B) {
	if sec := b.Elapsed().Seconds(); sec > 0 {
		b.ReportMetric(float64(b.N)/sec, "ops/s")
	}
}

func benchValue() []byte { return bytes.Repeat([]byte("certfleet"), 512/9+1)[:512] }

func randomPrefix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// fixture carries one subtest's store, context and unique key prefix.
type fixture struct {
	*testing.T
	s   store.Store
	ctx context.Context
	pfx string
}

func newFixture(t *testing.T, s store.Store) *fixture {
	return &fixture{T: t, s: s, ctx: t.Context(), pfx: randomPrefix() + ":" + t.Name()}
}

// pk returns a partition key unique to this subtest.
func (f *fixture) pk(name string) string { return f.pfx + "#" + name }

// key returns a key in the items table under this subtest's prefix.
func (f *fixture) key(pk, sk string) store.Key {
	return store.Key{Table: itemsTable, PK: f.pk(pk), SK: sk}
}

func (f *fixture) put(it store.Item, c store.Cond) store.Item {
	f.Helper()
	got, err := f.s.Put(f.ctx, it, c)
	if err != nil {
		f.Fatalf("Put(%s, %s): %v", it.Key, condString(c), err)
	}
	return got
}

func (f *fixture) get(k store.Key) store.Item {
	f.Helper()
	got, err := f.s.Get(f.ctx, k)
	if err != nil {
		f.Fatalf("Get(%s): %v", k, err)
	}
	return got
}

// expect checks that the stored item equals want.
func (f *fixture) expect(want store.Item) {
	f.Helper()
	if d := diffItem(f.get(want.Key), want); d != "" {
		f.Fatalf("Get(%s): %s", want.Key, d)
	}
}

// absent checks that Get reports ErrNotFound.
func (f *fixture) absent(k store.Key) {
	f.Helper()
	got, err := f.s.Get(f.ctx, k)
	if !errors.Is(err, store.ErrNotFound) {
		f.Fatalf("Get(%s) = %+v, %v; want ErrNotFound", k, got, err)
	}
}

// putFails checks that a conditional Put fails with ErrConditionFailed.
func (f *fixture) putFails(it store.Item, c store.Cond) {
	f.Helper()
	got, err := f.s.Put(f.ctx, it, c)
	if !errors.Is(err, store.ErrConditionFailed) {
		f.Fatalf("Put(%s, %s) = %+v, %v; want ErrConditionFailed", it.Key, condString(c), got, err)
	}
}

func (f *fixture) deleteFails(k store.Key, c store.Cond) {
	f.Helper()
	if err := f.s.Delete(f.ctx, k, c); !errors.Is(err, store.ErrConditionFailed) {
		f.Fatalf("Delete(%s, %s) = %v; want ErrConditionFailed", k, condString(c), err)
	}
}

func (f *fixture) del(k store.Key, c store.Cond) {
	f.Helper()
	if err := f.s.Delete(f.ctx, k, c); err != nil {
		f.Fatalf("Delete(%s, %s): %v", k, condString(c), err)
	}
}

func (f *fixture) transact(ws ...store.Write) {
	f.Helper()
	if err := f.s.Transact(f.ctx, ws); err != nil {
		f.Fatalf("Transact(%d writes): %v", len(ws), err)
	}
}

func condString(c store.Cond) string {
	switch c.Kind {
	case store.CondNone:
		return "Always"
	case store.CondAbsent:
		return "IfAbsent"
	case store.CondExists:
		return "IfExists"
	case store.CondVersion:
		return fmt.Sprintf("IfVersion(%d)", c.Version)
	}
	return fmt.Sprintf("Cond%+v", c)
}

// diffItem describes how got differs from want, or returns "".
func diffItem(got, want store.Item) string {
	var d []string
	if got.Key != want.Key {
		d = append(d, fmt.Sprintf("key %s, want %s", got.Key, want.Key))
	}
	if got.Version != want.Version {
		d = append(d, fmt.Sprintf("version %d, want %d", got.Version, want.Version))
	}
	if !bytes.Equal(got.Value, want.Value) {
		d = append(d, fmt.Sprintf("value %q, want %q", trunc(got.Value), trunc(want.Value)))
	}
	if !(len(got.Indexes) == 0 && len(want.Indexes) == 0) && !maps.Equal(got.Indexes, want.Indexes) {
		d = append(d, fmt.Sprintf("indexes %v, want %v", got.Indexes, want.Indexes))
	}
	if !got.ExpiresAt.Equal(want.ExpiresAt) {
		d = append(d, fmt.Sprintf("expires at %s, want %s", fmtTime(got.ExpiresAt), fmtTime(want.ExpiresAt)))
	}
	return strings.Join(d, "; ")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339Nano)
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:40:40], "..."...)
	}
	return b
}

// queryAll pages through q with page size limit, checking each page's size
// and that paging ends, and returns every item in order.
func (f *fixture) queryAll(q store.Query, limit int) ([]store.Item, error) {
	q.Limit = limit
	eff := limit
	if eff == 0 {
		eff = store.DefaultQueryLimit
	}
	var all []store.Item
	// An adapter may end with one empty page (DynamoDB does when the last
	// page was exactly full); any more pages than that means a page came
	// back short while more items followed, or paging does not end.
	for pages := 0; ; pages++ {
		if pages > len(all)/eff+1 || pages > 5000 {
			return all, fmt.Errorf("query %+v: paging did not end after %d pages and %d items", q, pages, len(all))
		}
		p, err := f.s.Query(f.ctx, q)
		if err != nil {
			return all, fmt.Errorf("query %+v: %w", q, err)
		}
		if len(p.Items) > eff {
			return all, fmt.Errorf("query %+v: page of %d items, over the limit %d", q, len(p.Items), eff)
		}
		all = append(all, p.Items...)
		if p.Cursor == "" {
			return all, nil
		}
		q.Cursor = p.Cursor
	}
}

// checkQuery asserts that q, paged at every given limit, returns want.
func (f *fixture) checkQuery(q store.Query, want []store.Item, limits ...int) {
	f.Helper()
	for _, limit := range limits {
		got, err := f.queryAll(q, limit)
		if err != nil {
			f.Fatal(err)
		}
		if d := diffItems(got, want); d != "" {
			f.Fatalf("query %+v limit %d: %s", q, limit, d)
		}
	}
}

// checkIndexQuery is checkQuery for a secondary index, which may lag the
// table briefly in an eventually consistent adapter.
func (f *fixture) checkIndexQuery(q store.Query, want []store.Item, limits ...int) {
	f.Helper()
	deadline := time.Now().Add(indexSettle)
	for _, limit := range limits {
		for {
			got, err := f.queryAll(q, limit)
			d := ""
			if err != nil {
				d = err.Error()
			} else {
				d = diffItems(got, want)
			}
			if d == "" {
				break
			}
			if time.Now().After(deadline) {
				f.Fatalf("index query %+v limit %d: %s", q, limit, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func diffItems(got, want []store.Item) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d items %s, want %d items %s", len(got), keyList(got), len(want), keyList(want))
	}
	for i := range got {
		if d := diffItem(got[i], want[i]); d != "" {
			return fmt.Sprintf("item %d: %s (got %s, want %s)", i, d, keyList(got), keyList(want))
		}
	}
	return ""
}

func keyList(items []store.Item) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(it.SK)
	}
	b.WriteByte(']')
	return b.String()
}

// model is the suite's reference of what a set of items should look like, to
// compute the expected results of table and index queries.
type model map[store.Key]store.Item

func (m model) tableQuery(q store.Query) []store.Item {
	var out []store.Item
	for _, it := range m {
		if it.Table == q.Table && it.PK == q.PK && skMatches(q, it.SK) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b store.Item) int { return strings.Compare(a.SK, b.SK) })
	if q.Reverse {
		slices.Reverse(out)
	}
	return out
}

// indexQuery assumes distinct index sort keys within the queried partition.
func (m model) indexQuery(q store.Query) []store.Item {
	var out []store.Item
	for _, it := range m {
		ik, ok := it.Indexes[q.Index]
		if it.Table == q.Table && ok && ik.PK == q.PK && skMatches(q, ik.SK) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b store.Item) int {
		return strings.Compare(a.Indexes[q.Index].SK, b.Indexes[q.Index].SK)
	})
	if q.Reverse {
		slices.Reverse(out)
	}
	return out
}

func skMatches(q store.Query, sk string) bool {
	return strings.HasPrefix(sk, q.SKPrefix) &&
		(q.SKFrom == "" || sk >= q.SKFrom) &&
		(q.SKTo == "" || sk <= q.SKTo)
}

// sortKeyFilters are the prefix and range variants every query test runs.
// Sort keys are compared as bytes (UTF-8), as DynamoDB does.
var sortKeyFilters = []struct{ prefix, from, to string }{
	{},
	{prefix: "a"},
	{prefix: "a/"},
	{prefix: "a/2"},
	{prefix: "b"},
	{prefix: "\u00e9"},
	{prefix: "nomatch"},
	{from: "a/2"},
	{to: "b"},
	{from: "a/10", to: "ba"},
	{from: "a/15", to: "c"},
	{from: "b", to: "b"},
	{from: "A", to: "A"},
	{from: "zz"},
	{to: "0"},
}

func testPing(f *fixture) {
	if err := f.s.Ping(f.ctx); err != nil {
		f.Fatalf("Ping: %v", err)
	}
}

func testGetAbsent(f *fixture) {
	f.absent(f.key("p", "nothing"))
	f.put(store.Item{Key: f.key("p", "a"), Value: []byte("a")}, store.Always)
	f.absent(f.key("p", "b"))
	f.absent(f.key("p", "a/"))
	f.absent(f.key("p", "A"))
	f.absent(store.Key{Table: otherTable, PK: f.pk("p"), SK: "a"})
	f.absent(f.key("q", "a"))
}

func testPutGetRoundtrip(f *fixture) {
	k := f.key("p", "item")
	v1 := []byte{0, 1, 2, 0xfe, 0xff, 'x', 0}
	// Version on the way in is ignored.
	got := f.put(store.Item{Key: k, Value: v1, Version: 42}, store.Always)
	want := store.Item{Key: k, Value: v1, Version: 1}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("first Put returned: %s", d)
	}
	f.expect(want)

	for v := int64(2); v <= 4; v++ {
		want = store.Item{Key: k, Value: []byte("value " + strconv.FormatInt(v, 10)), Version: v}
		got = f.put(store.Item{Key: k, Value: want.Value, Version: 1}, store.Always)
		if d := diffItem(got, want); d != "" {
			f.Fatalf("Put %d returned: %s", v, d)
		}
		f.expect(want)
	}

	// An empty value is a value.
	ek := f.key("p", "empty")
	got = f.put(store.Item{Key: ek}, store.IfAbsent)
	if got.Version != 1 || len(got.Value) != 0 {
		f.Fatalf("Put of empty value returned %+v", got)
	}
	f.expect(store.Item{Key: ek, Version: 1})

	// Indexes come back on Get, so a read-modify-write keeps them, and a
	// put without them drops them.
	ik := f.key("p", "indexed")
	idx := map[string]store.IndexKey{gsi1: {PK: f.pk("g1"), SK: "s1"}, gsi2: {PK: f.pk("g2"), SK: "s2"}}
	got = f.put(store.Item{Key: ik, Value: []byte("x"), Indexes: idx}, store.Always)
	want = store.Item{Key: ik, Value: []byte("x"), Version: 1, Indexes: idx}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put with indexes returned: %s", d)
	}
	f.expect(want)
	cur := f.get(ik)
	cur.Value = []byte("y")
	f.put(cur, store.IfVersion(1))
	f.expect(store.Item{Key: ik, Value: []byte("y"), Version: 2, Indexes: idx})
	f.put(store.Item{Key: ik, Value: []byte("z")}, store.IfVersion(2))
	f.expect(store.Item{Key: ik, Value: []byte("z"), Version: 3})
}

func testValueIsolation(f *fixture) {
	k := f.key("p", "item")
	in := []byte("original")
	out := f.put(store.Item{Key: k, Value: in}, store.Always)
	copy(in, "XXXXXXXX")
	if len(out.Value) > 0 {
		out.Value[0] = 'Y'
	}
	f.expect(store.Item{Key: k, Value: []byte("original"), Version: 1})
	g := f.get(k)
	g.Value[0] = 'Z'
	f.expect(store.Item{Key: k, Value: []byte("original"), Version: 1})
	p, err := f.s.Query(f.ctx, store.Query{Table: itemsTable, PK: k.PK})
	if err != nil || len(p.Items) != 1 {
		f.Fatalf("Query = %+v, %v", p, err)
	}
	p.Items[0].Value[0] = 'Q'
	f.expect(store.Item{Key: k, Value: []byte("original"), Version: 1})
}

func testTableIsolation(f *fixture) {
	a := f.key("p", "same")
	b := store.Key{Table: otherTable, PK: a.PK, SK: a.SK}
	f.put(store.Item{Key: a, Value: []byte("items")}, store.Always)
	f.put(store.Item{Key: a, Value: []byte("items 2")}, store.Always)
	f.put(store.Item{Key: b, Value: []byte("other")}, store.IfAbsent)
	f.expect(store.Item{Key: a, Value: []byte("items 2"), Version: 2})
	f.expect(store.Item{Key: b, Value: []byte("other"), Version: 1})
	f.del(b, store.IfVersion(1))
	f.absent(b)
	f.expect(store.Item{Key: a, Value: []byte("items 2"), Version: 2})
	f.checkQuery(store.Query{Table: otherTable, PK: a.PK}, nil, 0)
}

func testPutIfAbsent(f *fixture) {
	k := f.key("p", "item")
	idx := map[string]store.IndexKey{gsi1: {PK: f.pk("g"), SK: "first"}}
	got := f.put(store.Item{Key: k, Value: []byte("first"), Indexes: idx}, store.IfAbsent)
	want := store.Item{Key: k, Value: []byte("first"), Version: 1, Indexes: idx}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put IfAbsent returned: %s", d)
	}
	moved := map[string]store.IndexKey{gsi1: {PK: f.pk("g"), SK: "second"}}
	f.putFails(store.Item{Key: k, Value: []byte("second"), Indexes: moved}, store.IfAbsent)
	f.expect(want)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: f.pk("g")}, []store.Item{want}, 0)

	// After a delete the item is absent again and starts over at version 1.
	f.del(k, store.IfExists)
	got = f.put(store.Item{Key: k, Value: []byte("again")}, store.IfAbsent)
	if got.Version != 1 {
		f.Fatalf("re-created item has version %d, want 1", got.Version)
	}
	f.expect(store.Item{Key: k, Value: []byte("again"), Version: 1})
}

func testPutIfVersion(f *fixture) {
	k := f.key("p", "item")
	g := f.pk("g")
	f.putFails(store.Item{Key: k, Value: []byte("x")}, store.IfVersion(1))
	f.putFails(store.Item{Key: k, Value: []byte("x")}, store.IfVersion(0))
	f.absent(k)

	idx1 := map[string]store.IndexKey{gsi1: {PK: g, SK: "v1"}}
	f.put(store.Item{Key: k, Value: []byte("v1"), Indexes: idx1}, store.IfAbsent)
	idx2 := map[string]store.IndexKey{gsi1: {PK: g, SK: "v2"}}
	got := f.put(store.Item{Key: k, Value: []byte("v2"), Indexes: idx2}, store.IfVersion(1))
	want := store.Item{Key: k, Value: []byte("v2"), Version: 2, Indexes: idx2}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put IfVersion(1) returned: %s", d)
	}
	f.expect(want)

	// Stale and future versions fail and change nothing, index included.
	for _, v := range []int64{1, 3, 0, -1} {
		f.putFails(store.Item{Key: k, Value: []byte("stale"), Indexes: idx1}, store.IfVersion(v))
	}
	f.expect(want)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{want}, 0)

	got = f.put(store.Item{Key: k, Value: []byte("v3")}, store.IfVersion(2))
	if got.Version != 3 {
		f.Fatalf("Put IfVersion(2) returned version %d, want 3", got.Version)
	}
	f.expect(store.Item{Key: k, Value: []byte("v3"), Version: 3})
}

func testPutIfExists(f *fixture) {
	k := f.key("p", "item")
	f.putFails(store.Item{Key: k, Value: []byte("x")}, store.IfExists)
	f.absent(k)
	f.put(store.Item{Key: k, Value: []byte("one")}, store.Always)
	got := f.put(store.Item{Key: k, Value: []byte("two")}, store.IfExists)
	if got.Version != 2 {
		f.Fatalf("Put IfExists returned version %d, want 2", got.Version)
	}
	f.expect(store.Item{Key: k, Value: []byte("two"), Version: 2})
	f.del(k, store.Always)
	f.putFails(store.Item{Key: k, Value: []byte("three")}, store.IfExists)
	f.absent(k)
}

func testDelete(f *fixture) {
	k := f.key("p", "item")
	g := f.pk("g")
	idx := map[string]store.IndexKey{gsi1: {PK: g, SK: "x"}}
	f.put(store.Item{Key: k, Value: []byte("one"), Indexes: idx}, store.Always)
	f.put(store.Item{Key: k, Value: []byte("two"), Indexes: idx}, store.Always)
	want := store.Item{Key: k, Value: []byte("two"), Version: 2, Indexes: idx}

	f.deleteFails(k, store.IfVersion(1))
	f.deleteFails(k, store.IfVersion(3))
	f.deleteFails(k, store.IfAbsent)
	f.expect(want)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{want}, 0)

	f.del(k, store.IfVersion(2))
	f.absent(k)
	f.checkQuery(store.Query{Table: itemsTable, PK: k.PK}, nil, 0)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, nil, 0)

	k2 := f.key("p", "other")
	f.put(store.Item{Key: k2, Value: []byte("x")}, store.Always)
	f.del(k2, store.IfExists)
	f.absent(k2)
	k3 := f.key("p", "third")
	f.put(store.Item{Key: k3, Value: []byte("x")}, store.Always)
	f.del(k3, store.Always)
	f.absent(k3)
}

func testDeleteAbsent(f *fixture) {
	k := f.key("p", "never")
	f.del(k, store.Always)
	f.del(k, store.IfAbsent)
	f.deleteFails(k, store.IfExists)
	f.deleteFails(k, store.IfVersion(1))
	f.deleteFails(k, store.IfVersion(0))
	f.absent(k)
}

// querySortKeys are chosen so byte order, prefixes and multi-byte UTF-8 all
// matter.
var querySortKeys = []string{"a", "a/1", "a/10", "a/2", "a/2/x", "b", "b/1", "ba", "c", "c/x", "z", "A", "\u00e9t\u00e9", "\u00e9"}

func testQuery(f *fixture) {
	pk := f.pk("p")
	m := model{}
	for i, sk := range querySortKeys {
		it := store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: sk}, Value: []byte("v:" + sk)}
		it = f.put(it, store.Always)
		if i%3 == 0 { // some items at version 2
			it = f.put(it, store.IfVersion(1))
		}
		m[it.Key] = it
	}
	// Neighbours that a careless key encoding would mix into the
	// partition: a longer partition key sharing its prefix, one that sorts
	// right after it, and the same partition key in another table.
	for _, npk := range []string{pk + "a", pk + "/", pk + "\x01", pk[:len(pk)-1]} {
		for _, sk := range []string{"a", "a/3", "b", "\u00e9"} {
			f.put(store.Item{Key: store.Key{Table: itemsTable, PK: npk, SK: sk}, Value: []byte("neighbour")}, store.Always)
		}
	}
	for _, sk := range []string{"a", "a/3"} {
		f.put(store.Item{Key: store.Key{Table: otherTable, PK: pk, SK: sk}, Value: []byte("other table")}, store.Always)
	}

	for _, flt := range sortKeyFilters {
		for _, rev := range []bool{false, true} {
			q := store.Query{Table: itemsTable, PK: pk, SKPrefix: flt.prefix, SKFrom: flt.from, SKTo: flt.to, Reverse: rev}
			f.checkQuery(q, m.tableQuery(q), 0, 1, 3, 5)
		}
	}
}

func testQueryPaging(f *fixture) {
	pk := f.pk("p")
	m := model{}
	for i := range 250 {
		it := f.put(store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: fmt.Sprintf("item/%04d", i)}, Value: []byte(strconv.Itoa(i))}, store.Always)
		m[it.Key] = it
	}
	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, PK: pk, Reverse: rev}
		// 0 is the default page of 100; 1000 is the maximum.
		f.checkQuery(q, m.tableQuery(q), 0, 7, 100, 249, 250, 1000)
		q.SKFrom, q.SKTo = "item/0100", "item/0199"
		f.checkQuery(q, m.tableQuery(q), 0, 10, 33)
	}

	// The default limit is 100: the first page of a 250-item query has at
	// most 100 items and a cursor.
	p, err := f.s.Query(f.ctx, store.Query{Table: itemsTable, PK: pk})
	if err != nil {
		f.Fatal(err)
	}
	if len(p.Items) > store.DefaultQueryLimit || p.Cursor == "" {
		f.Fatalf("first default page: %d items, cursor %q; want at most %d and a cursor", len(p.Items), p.Cursor, store.DefaultQueryLimit)
	}

	// Items written after a page was read show up on a later page when
	// they sort after the cursor.
	q := store.Query{Table: itemsTable, PK: pk, Limit: 10}
	p, err = f.s.Query(f.ctx, q)
	if err != nil || len(p.Items) == 0 || p.Cursor == "" {
		f.Fatalf("first page: %d items, cursor %q, %v", len(p.Items), p.Cursor, err)
	}
	last := p.Items[len(p.Items)-1].SK
	late := f.put(store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: last + "+"}, Value: []byte("late")}, store.IfAbsent)
	q.Cursor = p.Cursor
	p, err = f.s.Query(f.ctx, q)
	if err != nil || len(p.Items) == 0 {
		f.Fatalf("second page: %+v, %v", p, err)
	}
	if d := diffItem(p.Items[0], late); d != "" {
		f.Fatalf("second page starts with %s; want the item written after the first page: %s", p.Items[0].SK, d)
	}
}

func testQueryEmpty(f *fixture) {
	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, PK: f.pk("empty"), Reverse: rev}
		p, err := f.s.Query(f.ctx, q)
		if err != nil || len(p.Items) != 0 || p.Cursor != "" {
			f.Fatalf("query of an empty partition = %+v, %v; want no items and no cursor", p, err)
		}
		q.Index = gsi1
		p, err = f.s.Query(f.ctx, q)
		if err != nil || len(p.Items) != 0 || p.Cursor != "" {
			f.Fatalf("query of an empty index partition = %+v, %v; want no items and no cursor", p, err)
		}
	}
}

func testIndex(f *fixture) {
	g, h, g2 := f.pk("g"), f.pk("h"), f.pk("g2")
	m := model{}
	put := func(pk, sk string, c store.Cond, idx map[string]store.IndexKey) {
		f.Helper()
		it := f.put(store.Item{Key: f.key(pk, sk), Value: []byte(pk + "/" + sk), Indexes: idx}, c)
		m[it.Key] = it
	}
	ix := func(pk, sk string) store.IndexKey { return store.IndexKey{PK: pk, SK: sk} }
	check := func(step string) {
		f.Helper()
		f.Logf("checking indexes after %s", step)
		for _, idx := range []struct{ name, pk string }{{gsi1, g}, {gsi1, h}, {gsi1, g + "x"}, {gsi2, g2}, {gsi2, g}} {
			for _, flt := range sortKeyFilters {
				for _, rev := range []bool{false, true} {
					q := store.Query{Table: itemsTable, Index: idx.name, PK: idx.pk, SKPrefix: flt.prefix, SKFrom: flt.from, SKTo: flt.to, Reverse: rev}
					f.checkIndexQuery(q, m.indexQuery(q), 0, 2)
				}
			}
		}
		// The table's own partitions are untouched by index entries.
		for _, pk := range []string{"t1", "t2", "t3"} {
			q := store.Query{Table: itemsTable, PK: f.pk(pk)}
			f.checkQuery(q, m.tableQuery(q), 0)
		}
		q := store.Query{Table: itemsTable, PK: g}
		f.checkQuery(q, m.tableQuery(q), 0)
	}

	// Items in three table partitions share index partitions.
	put("t1", "1", store.Always, map[string]store.IndexKey{gsi1: ix(g, "a/1"), gsi2: ix(g2, "b")})
	put("t1", "2", store.Always, map[string]store.IndexKey{gsi1: ix(g, "b")})
	put("t1", "3", store.Always, map[string]store.IndexKey{gsi1: ix(h, "a")})
	put("t2", "1", store.Always, map[string]store.IndexKey{gsi1: ix(g, "a/2"), gsi2: ix(g2, "a")})
	put("t2", "2", store.Always, map[string]store.IndexKey{gsi1: ix(g, "\u00e9"), gsi2: ix(g, "z")})
	put("t2", "3", store.Always, map[string]store.IndexKey{gsi1: ix(g+"x", "a")})
	put("t3", "1", store.Always, map[string]store.IndexKey{gsi1: ix(g, "c")})
	put("t3", "2", store.Always, map[string]store.IndexKey{gsi1: ix(g, "A"), gsi2: ix(g2, "c")})
	put("t3", "3", store.Always, nil)
	// A table item whose partition key equals an index partition key.
	m[store.Key{Table: itemsTable, PK: g, SK: "table"}] = f.put(store.Item{Key: store.Key{Table: itemsTable, PK: g, SK: "table"}, Value: []byte("t")}, store.Always)
	check("initial puts")

	// Move within an index partition, and to another index partition.
	put("t1", "1", store.IfVersion(1), map[string]store.IndexKey{gsi1: ix(g, "ba"), gsi2: ix(g2, "b")})
	put("t1", "2", store.IfVersion(1), map[string]store.IndexKey{gsi1: ix(h, "b")})
	check("moves")

	// Drop one index entry, then all of them.
	put("t2", "1", store.IfVersion(1), map[string]store.IndexKey{gsi2: ix(g2, "a")})
	put("t3", "2", store.IfExists, nil)
	check("drops")

	// Failed conditional puts change no index.
	f.putFails(store.Item{Key: f.key("t1", "1"), Value: []byte("no"), Indexes: map[string]store.IndexKey{gsi1: ix(g, "zz")}}, store.IfVersion(1))
	f.putFails(store.Item{Key: f.key("t2", "2"), Value: []byte("no")}, store.IfAbsent)
	check("failed puts")

	// Delete removes every entry; re-adding an index entry brings it back.
	f.del(f.key("t2", "2"), store.IfVersion(1))
	delete(m, f.key("t2", "2"))
	put("t3", "2", store.IfVersion(2), map[string]store.IndexKey{gsi1: ix(g, "b/1")})
	put("t3", "3", store.IfVersion(1), map[string]store.IndexKey{gsi1: ix(g, "a/10"), gsi2: ix(g2, "a/10")})
	check("delete and re-add")
}

func testIndexEqualSortKeys(f *fixture) {
	g := f.pk("g")
	want := map[store.Key]store.Item{}
	for i := range 7 {
		sk := "same"
		if i%3 == 2 {
			sk = "samf"
		}
		for _, pk := range []string{"t1", "t2"} {
			it := f.put(store.Item{Key: f.key(pk, strconv.Itoa(i)), Value: []byte{byte(i)}, Indexes: map[string]store.IndexKey{gsi1: {PK: g, SK: sk}}}, store.Always)
			want[it.Key] = it
		}
	}
	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, Index: gsi1, PK: g, Reverse: rev}
		var whole []store.Item
		deadline := time.Now().Add(indexSettle)
		for {
			var err error
			whole, err = f.queryAll(q, 0)
			if err != nil {
				f.Fatal(err)
			}
			if len(whole) == len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		seen := map[store.Key]bool{}
		for i, it := range whole {
			if d := diffItem(it, want[it.Key]); d != "" || seen[it.Key] {
				f.Fatalf("index query item %s: %s (seen before: %v)", it.Key, d, seen[it.Key])
			}
			seen[it.Key] = true
			if i > 0 {
				a, b := whole[i-1].Indexes[gsi1].SK, it.Indexes[gsi1].SK
				if (!rev && a > b) || (rev && a < b) {
					f.Fatalf("index query out of order: %q then %q (reverse %v)", a, b, rev)
				}
			}
		}
		if len(seen) != len(want) {
			f.Fatalf("index query returned %d distinct items, want %d", len(seen), len(want))
		}
		// Paging must walk the same stable order, each item exactly once.
		f.checkIndexQuery(q, whole, 1, 2, 3)
		q.SKPrefix = "same"
		f.checkIndexQuery(q, slices.DeleteFunc(slices.Clone(whole), func(it store.Item) bool { return it.Indexes[gsi1].SK != "same" }), 1, 4)
	}
}

func testIndexPaging(f *fixture) {
	g := f.pk("g")
	m := model{}
	for i := range 120 {
		// Index order differs from table order.
		idx := map[string]store.IndexKey{gsi1: {PK: g, SK: fmt.Sprintf("%04d", (i*37)%120)}}
		it := f.put(store.Item{Key: f.key(fmt.Sprintf("t%d", i%4), fmt.Sprintf("item/%04d", i)), Value: []byte(strconv.Itoa(i)), Indexes: idx}, store.Always)
		m[it.Key] = it
	}
	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, Index: gsi1, PK: g, Reverse: rev}
		f.checkIndexQuery(q, m.indexQuery(q), 0, 7, 120, 1000)
		q.SKFrom, q.SKTo = "0010", "0059"
		f.checkIndexQuery(q, m.indexQuery(q), 0, 9)
	}
}

func testIncrement(f *fixture) {
	inc := func(k store.Key, delta, want int64) {
		f.Helper()
		got, err := f.s.Increment(f.ctx, k, delta, time.Time{})
		if err != nil || got != want {
			f.Fatalf("Increment(%s, %d) = %d, %v; want %d", k, delta, got, err, want)
		}
	}
	k := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "users"}
	inc(k, 1, 1)
	inc(k, 1, 2)
	inc(k, 10, 12)
	inc(k, -5, 7)
	inc(k, 0, 7)
	k2 := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "accounts"}
	inc(k2, 0, 0)
	inc(k2, 3, 3)
	inc(k, 1, 8)
	k3 := store.Key{Table: itemsTable, PK: f.pk("counters"), SK: "users"}
	inc(k3, -2, -2)
	inc(k, 1, 9)
}

func testIncrementConcurrent(f *fixture) {
	const workers, each = 8, 25
	k := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "c"}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[int64]bool{}
		errs []error
	)
	for range workers {
		wg.Go(func() {
			for range each {
				v, err := f.s.Increment(f.ctx, k, 1, time.Time{})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if seen[v] {
					errs = append(errs, fmt.Errorf("value %d returned twice", v))
				}
				seen[v] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		f.Fatalf("concurrent increments: %v", errors.Join(errs...))
	}
	got, err := f.s.Increment(f.ctx, k, 0, time.Time{})
	if err != nil || got != workers*each {
		f.Fatalf("after %d increments the counter is %d, %v", workers*each, got, err)
	}
	for v := int64(1); v <= workers*each; v++ {
		if !seen[v] {
			f.Fatalf("no increment returned %d", v)
		}
	}
}

func testTransact25(f *fixture) {
	g := f.pk("g")
	var ws []store.Write
	var want []store.Item
	for i := range store.MaxTransactWrites {
		it := store.Item{Key: f.key(fmt.Sprintf("p%d", i%3), fmt.Sprintf("item/%02d", i)), Value: []byte(strconv.Itoa(i))}
		if i%2 == 0 {
			it.Indexes = map[string]store.IndexKey{gsi1: {PK: g, SK: fmt.Sprintf("%02d", i)}}
		}
		ws = append(ws, store.PutWrite(it, store.IfAbsent))
		it.Version = 1
		want = append(want, it)
	}
	f.transact(ws...)
	for _, it := range want {
		f.expect(it)
	}
	var indexed []store.Item
	for _, it := range want {
		if it.Indexes != nil {
			indexed = append(indexed, it)
		}
	}
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, indexed, 0)

	// 25 mixed writes on the same keys.
	ws = ws[:0]
	for i, it := range want {
		switch i % 3 {
		case 0:
			it.Value = []byte("updated")
			it.Indexes = nil
			ws = append(ws, store.PutWrite(it, store.IfVersion(1)))
		case 1:
			ws = append(ws, store.DeleteWrite(it.Key, store.IfExists))
		case 2:
			ws = append(ws, store.CheckWrite(it.Key, store.IfVersion(1)))
		}
	}
	f.transact(ws...)
	for i, it := range want {
		switch i % 3 {
		case 0:
			f.expect(store.Item{Key: it.Key, Value: []byte("updated"), Version: 2})
		case 1:
			f.absent(it.Key)
		case 2:
			f.expect(it)
		}
	}
	var still []store.Item
	for i, it := range indexed {
		if j := 2 * i; j%3 == 2 {
			still = append(still, it)
		}
	}
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, still, 0)
}

func testTransactConditionFails(f *fixture) {
	g := f.pk("g")
	a := f.put(store.Item{Key: f.key("p", "a"), Value: []byte("a"), Indexes: map[string]store.IndexKey{gsi1: {PK: g, SK: "a"}}}, store.Always)
	b := f.put(store.Item{Key: f.key("p", "b"), Value: []byte("b")}, store.Always)
	c := f.key("p", "c")
	d := f.key("q", "d")
	check := func(name string, failing int, ws ...store.Write) {
		f.Helper()
		err := f.s.Transact(f.ctx, ws)
		if !errors.Is(err, store.ErrConditionFailed) {
			f.Fatalf("%s: Transact = %v; want ErrConditionFailed", name, err)
		}
		var te *store.TxError
		if !errors.As(err, &te) {
			f.Fatalf("%s: Transact error %v (%T) is not a *store.TxError", name, err, err)
		}
		if te.Index != failing && te.Index != -1 {
			f.Fatalf("%s: TxError.Index = %d, want %d (or -1)", name, te.Index, failing)
		}
		f.expect(a)
		f.expect(b)
		f.absent(c)
		f.absent(d)
		f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{a}, 0)
	}
	moved := a
	moved.Value = []byte("moved")
	moved.Indexes = map[string]store.IndexKey{gsi1: {PK: g, SK: "z"}}
	cItem := store.Item{Key: c, Value: []byte("c"), Indexes: map[string]store.IndexKey{gsi1: {PK: g, SK: "c"}}}

	check("check of an absent item", 3,
		store.PutWrite(moved, store.IfVersion(1)),
		store.DeleteWrite(b.Key, store.Always),
		store.PutWrite(cItem, store.IfAbsent),
		store.CheckWrite(d, store.IfExists))
	check("first write fails", 0,
		store.PutWrite(moved, store.IfVersion(2)),
		store.DeleteWrite(b.Key, store.IfVersion(1)),
		store.PutWrite(cItem, store.IfAbsent))
	check("put IfAbsent on an existing item", 1,
		store.PutWrite(cItem, store.IfAbsent),
		store.PutWrite(b, store.IfAbsent),
		store.DeleteWrite(a.Key, store.Always))
	check("delete of an absent item", 2,
		store.PutWrite(moved, store.Always),
		store.CheckWrite(b.Key, store.IfExists),
		store.DeleteWrite(d, store.IfVersion(1)))
	check("check of a stale version", 1,
		store.DeleteWrite(a.Key, store.IfExists),
		store.CheckWrite(b.Key, store.IfVersion(2)),
		store.PutWrite(store.Item{Key: d, Value: []byte("d")}, store.Always))
	check("put IfExists of an absent item", 0,
		store.PutWrite(store.Item{Key: c, Value: []byte("c")}, store.IfExists),
		store.PutWrite(b, store.IfVersion(1)))
}

func testTransactMixed(f *fixture) {
	x := f.put(store.Item{Key: f.key("p", "x"), Value: []byte("x")}, store.Always)
	y := f.put(store.Item{Key: f.key("p", "y"), Value: []byte("y")}, store.Always)
	w := f.put(store.Item{Key: f.key("q", "w"), Value: []byte("w")}, store.Always)
	w = f.put(w, store.IfVersion(1))
	z := store.Item{Key: f.key("p", "z"), Value: []byte("z")}
	other := store.Item{Key: store.Key{Table: otherTable, PK: f.pk("p"), SK: "x"}, Value: []byte("other")}
	never := f.key("p", "never")

	w.Value = []byte("w3")
	f.transact(
		store.PutWrite(z, store.IfAbsent),
		store.DeleteWrite(x.Key, store.IfVersion(1)),
		store.CheckWrite(y.Key, store.IfVersion(1)),
		store.PutWrite(w, store.IfVersion(2)),
		store.PutWrite(other, store.Always),
		store.DeleteWrite(never, store.Always),
		store.CheckWrite(f.key("p", "nope"), store.IfAbsent),
	)
	z.Version = 1
	f.expect(z)
	f.absent(x.Key)
	f.expect(y)
	w.Version = 3
	f.expect(w)
	other.Version = 1
	f.expect(other)
	f.absent(never)
	f.absent(f.key("p", "nope"))

	// A transaction of one check writes nothing.
	f.transact(store.CheckWrite(y.Key, store.IfExists))
	f.expect(y)
	// Put with Always in a transaction still counts versions.
	f.transact(store.PutWrite(y, store.Always), store.PutWrite(store.Item{Key: x.Key, Value: []byte("back")}, store.Always))
	y.Version = 2
	f.expect(y)
	f.expect(store.Item{Key: x.Key, Value: []byte("back"), Version: 1})
}

func testTransactIndexes(f *fixture) {
	g := f.pk("g")
	ix := func(sk string) map[string]store.IndexKey { return map[string]store.IndexKey{gsi1: {PK: g, SK: sk}} }
	a := f.put(store.Item{Key: f.key("p", "a"), Value: []byte("a"), Indexes: ix("1")}, store.Always)
	b := f.put(store.Item{Key: f.key("p", "b"), Value: []byte("b"), Indexes: ix("2")}, store.Always)
	c := f.put(store.Item{Key: f.key("p", "c"), Value: []byte("c"), Indexes: ix("3")}, store.Always)
	n := store.Item{Key: f.key("p", "n"), Value: []byte("n"), Indexes: ix("0")}
	a.Indexes = ix("9")
	c.Indexes = nil
	f.transact(
		store.PutWrite(a, store.IfVersion(1)),
		store.DeleteWrite(b.Key, store.IfVersion(1)),
		store.PutWrite(c, store.IfVersion(1)),
		store.PutWrite(n, store.IfAbsent),
	)
	a.Version, c.Version, n.Version = 2, 2, 1
	f.expect(a)
	f.absent(b.Key)
	f.expect(c)
	f.expect(n)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{n, a}, 0, 1)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g, Reverse: true}, []store.Item{a, n}, 0, 1)
}

func testInvalid(f *fixture) {
	isInvalid := func(what string, err error) {
		f.Helper()
		if !errors.Is(err, store.ErrInvalid) {
			f.Errorf("%s: error %v, want ErrInvalid", what, err)
		}
	}
	ok := f.key("p", "ok")
	long := strings.Repeat("k", store.MaxSKBytes+1)
	badKeys := map[string]store.Key{
		"empty table": {PK: ok.PK, SK: "x"},
		"empty pk":    {Table: itemsTable, SK: "x"},
		"empty sk":    {Table: itemsTable, PK: ok.PK},
		"long pk":     {Table: itemsTable, PK: strings.Repeat("p", store.MaxPKBytes+1), SK: "x"},
		"long sk":     {Table: itemsTable, PK: ok.PK, SK: long},
		"nul in sk":   {Table: itemsTable, PK: ok.PK, SK: "a\x00b"},
	}
	for name, k := range badKeys {
		_, err := f.s.Get(f.ctx, k)
		isInvalid("Get with "+name, err)
		_, err = f.s.Put(f.ctx, store.Item{Key: k, Value: []byte("x")}, store.Always)
		isInvalid("Put with "+name, err)
		isInvalid("Delete with "+name, f.s.Delete(f.ctx, k, store.Always))
		_, err = f.s.Increment(f.ctx, k, 1, time.Time{})
		isInvalid("Increment with "+name, err)
		isInvalid("Transact with "+name, f.s.Transact(f.ctx, []store.Write{store.PutWrite(store.Item{Key: ok}, store.Always), store.CheckWrite(k, store.Always)}))
	}
	f.absent(ok)

	big := make([]byte, store.MaxValueBytes+1)
	_, err := f.s.Put(f.ctx, store.Item{Key: ok, Value: big}, store.Always)
	isInvalid("Put of an oversize value", err)
	_, err = f.s.Put(f.ctx, store.Item{Key: ok, Value: []byte("x"), Indexes: map[string]store.IndexKey{gsi1: {PK: "", SK: "x"}}}, store.Always)
	isInvalid("Put with an empty index partition key", err)
	_, err = f.s.Put(f.ctx, store.Item{Key: ok, Value: []byte("x"), Indexes: map[string]store.IndexKey{gsi1: {PK: "g", SK: ""}}}, store.Always)
	isInvalid("Put with an empty index sort key", err)
	f.absent(ok)

	// Transactions.
	var ws []store.Write
	for i := range store.MaxTransactWrites + 1 {
		ws = append(ws, store.PutWrite(store.Item{Key: f.key("t", fmt.Sprintf("%02d", i)), Value: []byte("x")}, store.Always))
	}
	isInvalid("Transact of 26 writes", f.s.Transact(f.ctx, ws))
	for _, w := range ws {
		f.absent(w.Item.Key)
	}
	isInvalid("Transact of no writes", f.s.Transact(f.ctx, nil))
	isInvalid("Transact writing a key twice", f.s.Transact(f.ctx, []store.Write{
		store.PutWrite(store.Item{Key: ok, Value: []byte("1")}, store.Always),
		store.PutWrite(store.Item{Key: f.key("p", "other")}, store.Always),
		store.CheckWrite(ok, store.Always),
	}))
	isInvalid("Transact with an unknown op", f.s.Transact(f.ctx, []store.Write{
		store.PutWrite(store.Item{Key: ok, Value: []byte("1")}, store.Always),
		{Op: 99, Item: store.Item{Key: f.key("p", "other")}},
	}))
	isInvalid("Transact with an oversize value", f.s.Transact(f.ctx, []store.Write{
		store.PutWrite(store.Item{Key: ok, Value: []byte("1")}, store.Always),
		store.PutWrite(store.Item{Key: f.key("p", "other"), Value: big}, store.Always),
	}))
	f.absent(ok)
	f.absent(f.key("p", "other"))

	// Queries.
	pk := f.pk("q")
	f.put(store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: "a"}}, store.Always)
	f.put(store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: "b"}}, store.Always)
	badQueries := map[string]store.Query{
		"no table":                   {PK: pk},
		"no partition":               {Table: itemsTable},
		"negative limit":             {Table: itemsTable, PK: pk, Limit: -1},
		"limit over max":             {Table: itemsTable, PK: pk, Limit: store.MaxQueryLimit + 1},
		"prefix and range":           {Table: itemsTable, PK: pk, SKPrefix: "a", SKFrom: "a"},
		"empty range":                {Table: itemsTable, PK: pk, SKFrom: "b", SKTo: "a"},
		"garbage cursor":             {Table: itemsTable, PK: pk, Cursor: "%%% not a cursor %%%"},
		"garbage cursor on an index": {Table: itemsTable, Index: gsi1, PK: pk, Cursor: "%%% not a cursor %%%"},
	}
	for name, q := range badQueries {
		_, err := f.s.Query(f.ctx, q)
		isInvalid("Query with "+name, err)
	}
}

func testLimits(f *fixture) {
	// The largest value and the longest keys are accepted and round-trip.
	big := bytes.Repeat([]byte{0xa5, 0x00, 0x5a}, store.MaxValueBytes/3+1)[:store.MaxValueBytes]
	k := f.key("p", strings.Repeat("s", store.MaxSKBytes))
	f.put(store.Item{Key: k, Value: big}, store.IfAbsent)
	f.expect(store.Item{Key: k, Value: big, Version: 1})

	pk := f.pk("")
	pk += strings.Repeat("p", store.MaxPKBytes-len(pk))
	lk := store.Key{Table: itemsTable, PK: pk, SK: strings.Repeat("\u00e9", store.MaxSKBytes/2)}
	it := store.Item{Key: lk, Value: []byte("long keys"), Indexes: map[string]store.IndexKey{gsi1: {PK: pk, SK: lk.SK}}}
	f.put(it, store.IfAbsent)
	it.Version = 1
	f.expect(it)
	f.checkQuery(store.Query{Table: itemsTable, PK: pk}, []store.Item{it}, 0)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: pk}, []store.Item{it}, 0)

	// A full page of the maximum size.
	q := store.Query{Table: itemsTable, PK: f.pk("max"), Limit: store.MaxQueryLimit}
	if _, err := f.s.Query(f.ctx, q); err != nil {
		f.Fatalf("query with the maximum limit: %v", err)
	}
}

// race runs fn on n goroutines released at once and returns their errors.
func race(n int, fn func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one error is nil and the rest are
// ErrConditionFailed, and returns the winner.
func (f *fixture) oneWinner(errs []error) int {
	f.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			f.Fatalf("goroutines %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConditionFailed):
			f.Fatalf("goroutine %d: %v; want nil or ErrConditionFailed", i, err)
		}
	}
	if winner < 0 {
		f.Fatalf("no goroutine won")
	}
	return winner
}

const racers = 16

func testConcurrentPutIfAbsent(f *fixture) {
	k := f.key("p", "item")
	errs := race(racers, func(i int) error {
		_, err := f.s.Put(f.ctx, store.Item{Key: k, Value: []byte(strconv.Itoa(i))}, store.IfAbsent)
		return err
	})
	w := f.oneWinner(errs)
	f.expect(store.Item{Key: k, Value: []byte(strconv.Itoa(w)), Version: 1})
}

func testConcurrentPutIfVersion(f *fixture) {
	k := f.key("p", "item")
	f.put(store.Item{Key: k, Value: []byte("start")}, store.IfAbsent)
	errs := race(racers, func(i int) error {
		_, err := f.s.Put(f.ctx, store.Item{Key: k, Value: []byte(strconv.Itoa(i))}, store.IfVersion(1))
		return err
	})
	w := f.oneWinner(errs)
	f.expect(store.Item{Key: k, Value: []byte(strconv.Itoa(w)), Version: 2})
}

func testConcurrentTransact(f *fixture) {
	// Each goroutine claims the shared item and writes its own marker in
	// one transaction: exactly one succeeds, and only its marker exists.
	k := f.key("p", "claim")
	f.put(store.Item{Key: k, Value: []byte("free")}, store.IfAbsent)
	marker := func(i int) store.Key { return f.key("markers", strconv.Itoa(i)) }
	errs := race(racers, func(i int) error {
		return f.s.Transact(f.ctx, []store.Write{
			store.PutWrite(store.Item{Key: marker(i), Value: []byte("mine")}, store.IfAbsent),
			store.PutWrite(store.Item{Key: k, Value: []byte(strconv.Itoa(i))}, store.IfVersion(1)),
		})
	})
	w := f.oneWinner(errs)
	f.expect(store.Item{Key: k, Value: []byte(strconv.Itoa(w)), Version: 2})
	for i := range racers {
		if i == w {
			f.expect(store.Item{Key: marker(i), Value: []byte("mine"), Version: 1})
		} else {
			f.absent(marker(i))
		}
	}
}

// Expiry. Expiries in the past are written directly; those that must pass
// while the test runs are 1-2 s ahead, and the test waits for them.

// pastExpiry is a whole second an hour ago: stored as it is, and expired.
func pastExpiry() time.Time { return time.Now().Add(-time.Hour).Truncate(time.Second) }

// futureExpiry is a whole second about an hour ahead.
func futureExpiry() time.Time { return time.Now().Add(time.Hour).Truncate(time.Second) }

// storedExpiry is what the store keeps for an expiry t: t rounded up to a
// whole second, in UTC.
func storedExpiry(t time.Time) time.Time { return store.ExpiryTime(store.ExpiryUnix(t)) }

// waitUntil sleeps until t has passed, so that an item stored with expiry
// t is expired.
func (f *fixture) waitUntil(t time.Time) {
	for d := time.Until(t); d > 0; d = time.Until(t) {
		select {
		case <-f.ctx.Done():
			f.Fatalf("waiting for %s: %v", fmtTime(t), f.ctx.Err())
		case <-time.After(d + 5*time.Millisecond):
		}
	}
}

// getAround checks Get(k) of want, an item that expires at want.ExpiresAt,
// by when the call ran: it must find want if it returned before the expiry
// and must not if it started at or after it (in between, either is right).
// It reports whether it could tell that the item was still there.
func (f *fixture) getAround(want store.Item) bool {
	f.Helper()
	start := time.Now()
	got, err := f.s.Get(f.ctx, want.Key)
	end := time.Now()
	exp := want.ExpiresAt
	switch {
	case err == nil:
		if !start.Before(exp) {
			f.Fatalf("Get(%s) at %s found an item that expired at %s", want.Key, fmtTime(start), fmtTime(exp))
		}
		if d := diffItem(got, want); d != "" {
			f.Fatalf("Get(%s): %s", want.Key, d)
		}
		return true
	case errors.Is(err, store.ErrNotFound):
		if end.Before(exp) {
			f.Fatalf("Get(%s) = ErrNotFound at %s, before its expiry %s", want.Key, fmtTime(end), fmtTime(exp))
		}
		return false
	default:
		f.Fatalf("Get(%s): %v", want.Key, err)
		return false
	}
}

func testExpiresAtRoundtrip(f *fixture) {
	g := f.pk("g")
	k := f.key("p", "item")
	idx := map[string]store.IndexKey{gsi1: {PK: g, SK: "x"}}

	// Below a second rounds up, to the next whole second, in UTC.
	at := futureExpiry().Add(250 * time.Millisecond)
	rounded := at.Truncate(time.Second).Add(time.Second)
	got := f.put(store.Item{Key: k, Value: []byte("v"), Indexes: idx, ExpiresAt: at}, store.IfAbsent)
	want := store.Item{Key: k, Value: []byte("v"), Version: 1, Indexes: idx, ExpiresAt: rounded}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put with ExpiresAt %s returned: %s", fmtTime(at), d)
	}
	if got.ExpiresAt.Location() != time.UTC {
		f.Fatalf("Put returned ExpiresAt in %v, want UTC", got.ExpiresAt.Location())
	}
	f.expect(want)
	if loc := f.get(k).ExpiresAt.Location(); loc != time.UTC {
		f.Fatalf("Get returned ExpiresAt in %v, want UTC", loc)
	}
	// One nanosecond past a second is the next second.
	k1 := f.key("q", "ns")
	sec := futureExpiry()
	f.put(store.Item{Key: k1, ExpiresAt: sec.Add(time.Nanosecond)}, store.Always)
	f.expect(store.Item{Key: k1, Version: 1, ExpiresAt: sec.Add(time.Second)})

	// A whole second stays, whatever the time zone.
	exact := futureExpiry().Add(time.Hour)
	want = store.Item{Key: k, Value: []byte("w"), Version: 2, Indexes: idx, ExpiresAt: exact}
	got = f.put(store.Item{Key: k, Value: []byte("w"), Indexes: idx, ExpiresAt: exact.In(time.FixedZone("UTC+5", 5*3600))}, store.IfVersion(1))
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put with a whole-second ExpiresAt returned: %s", d)
	}
	f.expect(want)
	f.checkQuery(store.Query{Table: itemsTable, PK: k.PK}, []store.Item{want}, 0)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{want}, 0)

	// A read-modify-put keeps the expiry; a put without one clears it.
	cur := f.get(k)
	cur.Value = []byte("x")
	f.put(cur, store.IfVersion(2))
	want.Value, want.Version = []byte("x"), 3
	f.expect(want)
	got = f.put(store.Item{Key: k, Value: []byte("y"), Indexes: idx}, store.Always)
	want = store.Item{Key: k, Value: []byte("y"), Version: 4, Indexes: idx}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put without ExpiresAt returned: %s", d)
	}
	f.expect(want)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{want}, 0)

	// Transaction puts keep expiries the same way.
	k2, k3 := f.key("p", "tx1"), f.key("p", "tx2")
	f.transact(
		store.PutWrite(store.Item{Key: k2, Value: []byte("t"), ExpiresAt: at}, store.IfAbsent),
		store.PutWrite(store.Item{Key: k3, Value: []byte("u"), ExpiresAt: exact}, store.Always),
		store.PutWrite(store.Item{Key: k, Value: []byte("z"), ExpiresAt: exact}, store.IfVersion(4)),
	)
	f.expect(store.Item{Key: k2, Value: []byte("t"), Version: 1, ExpiresAt: rounded})
	f.expect(store.Item{Key: k3, Value: []byte("u"), Version: 1, ExpiresAt: exact})
	f.expect(store.Item{Key: k, Value: []byte("z"), Version: 5, ExpiresAt: exact})
}

func testExpiredGet(f *fixture) {
	k := f.key("p", "old")
	got := f.put(store.Item{Key: k, Value: []byte("old"), ExpiresAt: pastExpiry()}, store.Always)
	if got.Version != 1 {
		f.Fatalf("Put of an expired item returned version %d, want 1", got.Version)
	}
	f.absent(k)

	// "At or before now": an expiry of the current second has passed.
	now := f.key("p", "now")
	f.put(store.Item{Key: now, Value: []byte("now"), ExpiresAt: time.Now().Truncate(time.Second)}, store.Always)
	f.absent(now)

	// A future expiry reads; the same key in another table is separate.
	live := store.Item{Key: f.key("p", "live"), Value: []byte("live"), ExpiresAt: futureExpiry()}
	live = f.put(live, store.IfAbsent)
	f.expect(live)
	other := store.Key{Table: otherTable, PK: k.PK, SK: k.SK}
	f.put(store.Item{Key: other, Value: []byte("other")}, store.IfAbsent)
	f.expect(store.Item{Key: other, Value: []byte("other"), Version: 1})
	f.absent(k)

	// Deleting an expired item without a condition succeeds.
	f.del(k, store.Always)
	f.absent(k)
}

func testExpiresWhileStored(f *fixture) {
	g := f.pk("g")
	k := f.key("p", "soon")
	exp := storedExpiry(time.Now().Add(2 * time.Second))
	it := f.put(store.Item{Key: k, Value: []byte("soon"), Indexes: map[string]store.IndexKey{gsi1: {PK: g, SK: "s"}}, ExpiresAt: exp}, store.IfAbsent)
	if d := diffItem(it, store.Item{Key: k, Value: []byte("soon"), Version: 1, Indexes: it.Indexes, ExpiresAt: exp}); d != "" {
		f.Fatalf("Put returned: %s", d)
	}
	keep := f.put(store.Item{Key: f.key("p", "keep"), Value: []byte("keep")}, store.IfAbsent)
	if !f.getAround(it) {
		f.Logf("the machine is slow: could not see the item before it expired")
	}
	f.waitUntil(exp)
	f.absent(k)
	f.checkQuery(store.Query{Table: itemsTable, PK: k.PK}, []store.Item{keep}, 0, 1)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, nil, 0)
	f.putFails(store.Item{Key: k, Value: []byte("x")}, store.IfVersion(1))
	got := f.put(store.Item{Key: k, Value: []byte("again")}, store.IfAbsent)
	if got.Version != 1 {
		f.Fatalf("Put IfAbsent over an item that expired returned version %d, want 1", got.Version)
	}
	f.expect(store.Item{Key: k, Value: []byte("again"), Version: 1})
}

func testExpiredConditions(f *fixture) {
	g := f.pk("g")
	k := f.key("p", "item")
	ix := func(sk string) map[string]store.IndexKey { return map[string]store.IndexKey{gsi1: {PK: g, SK: sk}} }
	it := f.put(store.Item{Key: k, Value: []byte("live"), Indexes: ix("live"), ExpiresAt: futureExpiry()}, store.IfAbsent)
	it = f.put(it, store.IfVersion(1))
	// Expire it by giving it an expiry in the past.
	it = f.put(store.Item{Key: k, Value: []byte("expired"), Indexes: ix("expired"), ExpiresAt: pastExpiry()}, store.IfVersion(2))
	if it.Version != 3 {
		f.Fatalf("Put IfVersion(2) returned version %d, want 3", it.Version)
	}
	f.absent(k)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, nil, 0)

	// It is absent to every condition.
	for _, c := range []store.Cond{store.IfExists, store.IfVersion(3), store.IfVersion(0)} {
		f.putFails(store.Item{Key: k, Value: []byte("no")}, c)
		f.deleteFails(k, c)
	}
	f.absent(k)

	// IfAbsent holds, and the item starts again at version 1 with only the
	// new index entries.
	got := f.put(store.Item{Key: k, Value: []byte("new"), Indexes: ix("new")}, store.IfAbsent)
	want := store.Item{Key: k, Value: []byte("new"), Version: 1, Indexes: ix("new")}
	if d := diffItem(got, want); d != "" {
		f.Fatalf("Put IfAbsent over an expired item returned: %s", d)
	}
	f.expect(want)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{want}, 0)

	// So does an unconditional put, over an expired item and over a live
	// one.
	a := f.key("p", "always")
	for range 2 {
		if got := f.put(store.Item{Key: a, Value: []byte("e"), ExpiresAt: pastExpiry()}, store.Always); got.Version != 1 {
			f.Fatalf("Put Always over an absent or expired item returned version %d, want 1", got.Version)
		}
	}
	for v := int64(1); v <= 3; v++ {
		got := f.put(store.Item{Key: a, Value: []byte("live"), ExpiresAt: futureExpiry()}, store.Always)
		if got.Version != v {
			f.Fatalf("Put Always returned version %d, want %d", got.Version, v)
		}
	}

	// Delete IfAbsent of an expired item succeeds; afterwards it is absent
	// as before.
	d := f.key("p", "delete")
	f.put(store.Item{Key: d, Value: []byte("d"), ExpiresAt: pastExpiry()}, store.Always)
	f.del(d, store.IfAbsent)
	f.absent(d)
	f.deleteFails(d, store.IfExists)
	f.put(store.Item{Key: d, Value: []byte("d"), ExpiresAt: pastExpiry()}, store.Always)
	f.del(d, store.Always)
	f.absent(d)
}

func testExpiredTransact(f *fixture) {
	g := f.pk("g")
	ix := func(sk string) map[string]store.IndexKey { return map[string]store.IndexKey{gsi1: {PK: g, SK: sk}} }
	expired := func(name string) store.Key {
		k := f.key("p", name)
		f.put(store.Item{Key: k, Value: []byte("expired " + name), Indexes: ix("old-" + name), ExpiresAt: pastExpiry()}, store.Always)
		return k
	}
	a, c, d, e, x := expired("a"), expired("c"), expired("d"), expired("e"), expired("x")
	b := f.put(store.Item{Key: f.key("p", "b"), Value: []byte("b")}, store.IfAbsent)
	y := f.put(store.Item{Key: f.key("p", "y"), Value: []byte("y")}, store.IfAbsent)

	// Conditions that need the item fail on an expired one, and nothing is
	// written; an unconditional put in the same transaction changes
	// nothing about that.
	failing := func(name string, index int, ws ...store.Write) {
		f.Helper()
		err := f.s.Transact(f.ctx, ws)
		var te *store.TxError
		if !errors.Is(err, store.ErrConditionFailed) || !errors.As(err, &te) {
			f.Fatalf("%s: Transact = %v; want a *store.TxError", name, err)
		}
		if te.Index != index && te.Index != -1 {
			f.Fatalf("%s: TxError.Index = %d, want %d", name, te.Index, index)
		}
		for _, k := range []store.Key{a, c, d, e, x} {
			f.absent(k)
		}
		f.expect(b)
	}
	failing("check IfExists", 1,
		store.PutWrite(store.Item{Key: d, Value: []byte("d")}, store.Always),
		store.CheckWrite(c, store.IfExists))
	failing("put IfVersion", 2,
		store.PutWrite(store.Item{Key: d, Value: []byte("d")}, store.Always),
		store.CheckWrite(b.Key, store.IfVersion(1)),
		store.PutWrite(store.Item{Key: c, Value: []byte("c")}, store.IfVersion(1)))
	failing("delete IfExists", 0,
		store.DeleteWrite(e, store.IfExists),
		store.PutWrite(store.Item{Key: x, Value: []byte("x")}, store.Always))
	failing("put IfExists after an unconditional put", 1,
		store.PutWrite(store.Item{Key: x, Value: []byte("x")}, store.Always),
		store.PutWrite(store.Item{Key: c, Value: []byte("c")}, store.IfExists))

	// Absence holds over expired items; puts start again at version 1.
	f.transact(
		store.PutWrite(store.Item{Key: a, Value: []byte("a"), Indexes: ix("a")}, store.IfAbsent),
		store.CheckWrite(c, store.IfAbsent),
		store.PutWrite(store.Item{Key: d, Value: []byte("d"), Indexes: ix("d")}, store.Always),
		store.CheckWrite(b.Key, store.IfVersion(1)),
		store.DeleteWrite(e, store.IfAbsent),
		store.PutWrite(store.Item{Key: y.Key, Value: []byte("y2")}, store.Always),
	)
	wantA := store.Item{Key: a, Value: []byte("a"), Version: 1, Indexes: ix("a")}
	wantD := store.Item{Key: d, Value: []byte("d"), Version: 1, Indexes: ix("d")}
	f.expect(wantA)
	f.expect(wantD)
	f.expect(b)
	f.expect(store.Item{Key: y.Key, Value: []byte("y2"), Version: 2})
	f.absent(c)
	f.absent(e)
	f.absent(x)
	f.checkIndexQuery(store.Query{Table: itemsTable, Index: gsi1, PK: g}, []store.Item{wantA, wantD}, 0)
}

// expiryPattern lays out a partition of n items, some expired: runs of
// expired items at both ends and in the middle, and single ones between
// live items. It returns whether item i is expired.
func expiryPattern(i, n int) bool {
	switch {
	case i < 3 || i >= n-4:
		return true
	case i >= n/2 && i < n/2+5:
		return true
	}
	return i%3 == 1
}

func testExpiredQuery(f *fixture) {
	pk, g := f.pk("p"), f.pk("g")
	const n = 30
	m := model{}
	var ws []store.Write
	for i := range n {
		sk := fmt.Sprintf("item/%02d", i)
		it := store.Item{
			Key:     store.Key{Table: itemsTable, PK: pk, SK: sk},
			Value:   []byte(sk),
			Indexes: map[string]store.IndexKey{gsi1: {PK: g, SK: fmt.Sprintf("%02d", n-1-i)}},
		}
		if expiryPattern(i, n) {
			it.ExpiresAt = pastExpiry()
		} else if i%2 == 0 {
			it.ExpiresAt = futureExpiry()
			m[it.Key] = it
		} else {
			m[it.Key] = it
		}
		ws = append(ws, store.PutWrite(it, store.Always))
		if len(ws) == store.MaxTransactWrites || i == n-1 {
			f.transact(ws...)
			ws = ws[:0]
		}
	}
	for k, it := range m {
		it.Version = 1
		m[k] = it
	}
	live := len(m)

	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, PK: pk, Reverse: rev}
		f.checkQuery(q, m.tableQuery(q), 0, 1, 2, 3, live-1, live)
		for _, flt := range []struct{ prefix, from, to string }{{prefix: "item/1"}, {from: "item/05", to: "item/25"}, {to: "item/02"}} {
			q := store.Query{Table: itemsTable, PK: pk, SKPrefix: flt.prefix, SKFrom: flt.from, SKTo: flt.to, Reverse: rev}
			f.checkQuery(q, m.tableQuery(q), 0, 2)
		}
		q = store.Query{Table: itemsTable, Index: gsi1, PK: g, Reverse: rev}
		f.checkIndexQuery(q, m.indexQuery(q), 0, 1, 3, live)
		q.SKFrom = "10"
		f.checkIndexQuery(q, m.indexQuery(q), 0, 2)
	}

	// Expired items at the end of a partition do not make a cursor: a page
	// that holds the last live item has none, in either direction and for
	// the index too.
	for _, q := range []store.Query{
		{Table: itemsTable, PK: pk, Limit: live},
		{Table: itemsTable, PK: pk, Limit: live, Reverse: true},
		{Table: itemsTable, Index: gsi1, PK: g, Limit: live},
		{Table: itemsTable, Index: gsi1, PK: g, Limit: live, Reverse: true},
	} {
		p, err := f.s.Query(f.ctx, q)
		if err != nil || len(p.Items) != live || p.Cursor != "" {
			f.Fatalf("query %+v: %d items, cursor %q, %v; want %d items and no cursor", q, len(p.Items), p.Cursor, err, live)
		}
		q.Limit = live - 1
		p, err = f.s.Query(f.ctx, q)
		if err != nil || len(p.Items) != live-1 || p.Cursor == "" {
			f.Fatalf("query %+v: %d items, cursor %q, %v; want %d items and a cursor", q, len(p.Items), p.Cursor, err, live-1)
		}
		q.Cursor = p.Cursor
		p, err = f.s.Query(f.ctx, q)
		if err != nil || len(p.Items) != 1 || p.Cursor != "" {
			f.Fatalf("last page of %+v: %d items, cursor %q, %v; want 1 item and no cursor", q, len(p.Items), p.Cursor, err)
		}
	}

	// A partition of nothing but expired items is empty, without a cursor.
	q := store.Query{Table: itemsTable, PK: pk, SKTo: "item/02", Limit: 1}
	if p, err := f.s.Query(f.ctx, q); err != nil || len(p.Items) != 0 || p.Cursor != "" {
		f.Fatalf("query of expired items only = %+v, %v; want no items and no cursor", p, err)
	}
}

func testExpiredQueryPaging(f *fixture) {
	// Long runs of expired items between a few live ones: a backend that
	// filters after its page limit must keep reading past them.
	pk := f.pk("p")
	m := model{}
	var ws []store.Write
	flush := func() {
		if len(ws) > 0 {
			f.transact(ws...)
			ws = ws[:0]
		}
	}
	for i := range 260 {
		it := store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: fmt.Sprintf("item/%04d", i)}, Value: []byte(strconv.Itoa(i))}
		if i%13 < 10 {
			it.ExpiresAt = pastExpiry()
		} else {
			m[it.Key] = store.Item{Key: it.Key, Value: it.Value, Version: 1}
		}
		ws = append(ws, store.PutWrite(it, store.Always))
		if len(ws) == store.MaxTransactWrites {
			flush()
		}
	}
	flush()
	for _, rev := range []bool{false, true} {
		q := store.Query{Table: itemsTable, PK: pk, Reverse: rev}
		f.checkQuery(q, m.tableQuery(q), 0, 1, 7, 60, 1000)
	}
}

func testExpiresDuringPaging(f *fixture) {
	// A cursor stays valid when the item it points at expires.
	pk := f.pk("p")
	exp := storedExpiry(time.Now().Add(2 * time.Second))
	var ws []store.Write
	var all, odd []store.Item
	for i := range 10 {
		it := store.Item{Key: store.Key{Table: itemsTable, PK: pk, SK: fmt.Sprintf("%02d", i)}, Value: []byte{byte(i)}, Version: 1}
		if i%2 == 0 {
			it.ExpiresAt = exp
		} else {
			odd = append(odd, it)
		}
		all = append(all, it)
		ws = append(ws, store.PutWrite(it, store.IfAbsent))
	}
	f.transact(ws...)

	q := store.Query{Table: itemsTable, PK: pk, Limit: 3}
	start := time.Now()
	p, err := f.s.Query(f.ctx, q)
	end := time.Now()
	if err != nil || p.Cursor == "" {
		f.Fatalf("first page: %+v, %v", p, err)
	}
	switch {
	case end.Before(exp):
		if d := diffItems(p.Items, all[:3]); d != "" {
			f.Fatalf("first page before the expiry: %s", d)
		}
	case !start.Before(exp):
		f.Logf("the machine is slow: the first page came after the expiry")
		if d := diffItems(p.Items, odd[:3]); d != "" {
			f.Fatalf("first page after the expiry: %s", d)
		}
	}
	f.waitUntil(exp)
	last := p.Items[len(p.Items)-1].SK
	q.Cursor = p.Cursor
	rest, err := f.queryAll(q, 3)
	if err != nil {
		f.Fatal(err)
	}
	var want []store.Item
	for _, it := range odd {
		if it.SK > last {
			want = append(want, it)
		}
	}
	if d := diffItems(rest, want); d != "" {
		f.Fatalf("pages after the expiry, from a cursor at %s: %s", last, d)
	}
}

func testIncrementExpiry(f *fixture) {
	inc := func(k store.Key, delta int64, exp time.Time, want int64) {
		f.Helper()
		got, err := f.s.Increment(f.ctx, k, delta, exp)
		if err != nil || got != want {
			f.Fatalf("Increment(%s, %d, %s) = %d, %v; want %d", k, delta, fmtTime(exp), got, err, want)
		}
	}
	never := time.Time{}
	ctr := func(name string) store.Key { return store.Key{Table: otherTable, PK: f.pk("counters"), SK: name} }

	// An expired counter counts from 0 again, and without an expiry
	// given it then never expires.
	k := ctr("a")
	inc(k, 3, pastExpiry(), 3)
	inc(k, 0, never, 0)
	inc(k, 0, never, 0)
	inc(k, 2, never, 2)
	inc(k, 1, never, 3)

	// A given expiry replaces the counter's; the zero time keeps it.
	k = ctr("b")
	inc(k, 1, futureExpiry(), 1)
	inc(k, 1, never, 2)
	inc(k, 1, pastExpiry(), 3) // expired from now on
	inc(k, 0, never, 0)
	inc(k, 5, futureExpiry(), 5)
	inc(k, -1, never, 4)
	inc(k, 1, futureExpiry().Add(time.Hour), 5)
	inc(k, 0, never, 5)

	// A counter that is created expired is expired at once.
	k = ctr("c")
	inc(k, 7, time.Now().Truncate(time.Second), 7)
	inc(k, 1, futureExpiry(), 1)

	// Counters with and without expiry are separate per key and table.
	k2 := store.Key{Table: itemsTable, PK: k.PK, SK: k.SK}
	inc(k2, 10, never, 10)
	inc(k, 1, never, 2)
	inc(k2, 0, never, 10)
}

func testIncrementExpiresWhileCounting(f *fixture) {
	never := time.Time{}
	k1 := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "window"}
	k2 := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "extended"}
	exp := storedExpiry(time.Now().Add(2 * time.Second))
	var v [4]int64
	var errs [4]error
	v[0], errs[0] = f.s.Increment(f.ctx, k1, 1, exp)
	v[1], errs[1] = f.s.Increment(f.ctx, k1, 1, exp)
	v[2], errs[2] = f.s.Increment(f.ctx, k2, 1, exp)
	v[3], errs[3] = f.s.Increment(f.ctx, k2, 1, futureExpiry()) // extends it
	inTime := time.Now().Before(exp)
	if err := errors.Join(errs[:]...); err != nil {
		f.Fatal(err)
	}
	if inTime && v != [4]int64{1, 2, 1, 2} {
		f.Fatalf("increments before the expiry returned %v, want [1 2 1 2]", v)
	}
	f.waitUntil(exp)
	got, err := f.s.Increment(f.ctx, k1, 0, never)
	if err != nil || got != 0 {
		f.Fatalf("read of an expired counter = %d, %v; want 0", got, err)
	}
	got, err = f.s.Increment(f.ctx, k1, 1, never)
	if err != nil || got != 1 {
		f.Fatalf("increment of an expired counter = %d, %v; want 1", got, err)
	}
	if got, err = f.s.Increment(f.ctx, k2, 0, never); err != nil || (inTime && got != 2) {
		f.Fatalf("read of a counter whose expiry was extended = %d, %v; want 2", got, err)
	}
}

func testIncrementConcurrentRestart(f *fixture) {
	// Many callers find the same counter expired at once: it restarts once
	// and every increment counts.
	k := store.Key{Table: otherTable, PK: f.pk("counters"), SK: "restart"}
	if _, err := f.s.Increment(f.ctx, k, 100, pastExpiry()); err != nil {
		f.Fatal(err)
	}
	exp := futureExpiry()
	var mu sync.Mutex
	seen := map[int64]bool{}
	errs := race(racers, func(int) error {
		v, err := f.s.Increment(f.ctx, k, 1, exp)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[v] {
			return fmt.Errorf("value %d returned twice", v)
		}
		seen[v] = true
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		f.Fatal(err)
	}
	for v := int64(1); v <= racers; v++ {
		if !seen[v] {
			f.Fatalf("no increment returned %d (got %v)", v, seen)
		}
	}
	if got, err := f.s.Increment(f.ctx, k, 0, time.Time{}); err != nil || got != racers {
		f.Fatalf("after %d increments the counter is %d, %v", racers, got, err)
	}
}

func testInvalidExpiry(f *fixture) {
	k := f.key("p", "item")
	for _, at := range []time.Time{time.Unix(0, 0), time.Unix(-3600, 0), time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)} {
		_, err := f.s.Put(f.ctx, store.Item{Key: k, Value: []byte("x"), ExpiresAt: at}, store.Always)
		if !errors.Is(err, store.ErrInvalid) {
			f.Fatalf("Put with ExpiresAt %s: %v, want ErrInvalid", fmtTime(at), err)
		}
		err = f.s.Transact(f.ctx, []store.Write{
			store.PutWrite(store.Item{Key: f.key("p", "ok")}, store.Always),
			store.PutWrite(store.Item{Key: k, ExpiresAt: at}, store.Always),
		})
		if !errors.Is(err, store.ErrInvalid) {
			f.Fatalf("Transact with ExpiresAt %s: %v, want ErrInvalid", fmtTime(at), err)
		}
		_, err = f.s.Increment(f.ctx, store.Key{Table: otherTable, PK: k.PK, SK: "c"}, 1, at)
		if !errors.Is(err, store.ErrInvalid) {
			f.Fatalf("Increment with expiresAt %s: %v, want ErrInvalid", fmtTime(at), err)
		}
	}
	f.absent(k)
	f.absent(f.key("p", "ok"))
	if got, err := f.s.Increment(f.ctx, store.Key{Table: otherTable, PK: k.PK, SK: "c"}, 0, time.Time{}); err != nil || got != 0 {
		f.Fatalf("counter after invalid increments = %d, %v; want 0", got, err)
	}
	// The first second after the epoch is valid, and long past.
	f.put(store.Item{Key: k, Value: []byte("x"), ExpiresAt: time.Unix(0, 1)}, store.IfAbsent)
	f.absent(k)
}
