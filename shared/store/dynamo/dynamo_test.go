package dynamo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/certfleet/certfleet/shared/internal/mototest"
	"github.com/certfleet/certfleet/shared/store"
	"github.com/certfleet/certfleet/shared/store/dynamo"
	"github.com/certfleet/certfleet/shared/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(mototest.Run(m)) }

var prefixSeq atomic.Int64

// newClient builds a client the way the Lambda shape does: from the
// environment, which mototest points at moto.
func newClient(t testing.TB) *dynamodb.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dynamodb.NewFromConfig(cfg)
}

// uniquePrefix keeps each test's tables apart in the shared moto server.
func uniquePrefix() string {
	return fmt.Sprintf("t%d-%d-", time.Now().UnixNano()%1e9, prefixSeq.Add(1))
}

// newStore creates specs under a fresh prefix and returns a store over them.
func newStore(t testing.TB, specs []store.TableSpec) (*dynamo.Store, *dynamodb.Client, string) {
	t.Helper()
	client := newClient(t)
	prefix := uniquePrefix()
	if err := dynamo.CreateTables(context.Background(), client, prefix, specs); err != nil {
		t.Fatal(err)
	}
	return dynamo.New(client, prefix, specs), client, prefix
}

// metaTables mirrors the meta table of shared/app.Tables (not imported: app
// wires every adapter, this one included).
var metaTables = []store.TableSpec{{Name: "meta", Indexes: []string{"gsi1"}}}

func TestConformance(t *testing.T) {
	s, _, _ := newStore(t, storetest.Tables)
	storetest.Run(t, &motoSerial{s: s})
}

// motoSerial runs the adapter's writes against moto one at a time (reads
// may overlap each other, never a write).
//
// moto is not a linearizable DynamoDB: its threaded server holds no lock, so a
// conditional UpdateItem is check-then-act (two IfVersion puts can both
// win), ADD can lose updates, a query iterating a table can race an
// insert, and TransactWriteItems applies its writes one by one and, when
// one fails, restores a deep copy of every table it touched taken at its
// start, silently undoing other clients' writes made meanwhile and
// resurrecting their rolled-back ones. The suite's parallel subtests trip
// all of these. DynamoDB itself serialises conditional writes per item and
// transactions across items, so the adapter relies on it and does not lock;
// this wrapper gives moto the same guarantee for the test.
type motoSerial struct {
	mu sync.RWMutex
	s  store.Store
}

func (m *motoSerial) Get(ctx context.Context, k store.Key) (store.Item, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.Get(ctx, k)
}

func (m *motoSerial) Query(ctx context.Context, q store.Query) (store.Page, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.Query(ctx, q)
}

func (m *motoSerial) Ping(ctx context.Context) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.s.Ping(ctx)
}

func (m *motoSerial) Put(ctx context.Context, it store.Item, c store.Cond) (store.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Put(ctx, it, c)
}

func (m *motoSerial) Delete(ctx context.Context, k store.Key, c store.Cond) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Delete(ctx, k, c)
}

func (m *motoSerial) Increment(ctx context.Context, k store.Key, delta int64, expiresAt time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Increment(ctx, k, delta, expiresAt)
}

func (m *motoSerial) Transact(ctx context.Context, writes []store.Write) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Transact(ctx, writes)
}

// TestConcurrentUse exercises one store from many goroutines without the
// moto wrapper, on distinct keys (which moto handles), for the race
// detector: the lazily filled index cache especially.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t, storetest.Tables)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 16 {
		wg.Go(func() {
			k := store.Key{Table: "items", PK: "c", SK: strconv.Itoa(i)}
			it := store.Item{Key: k, Value: []byte(k.SK), Indexes: map[string]store.IndexKey{"gsi1": {PK: "g", SK: k.SK}}}
			if i%2 == 0 {
				it.Table, it.Indexes = "other", nil
			}
			got, err := s.Put(ctx, it, store.IfAbsent)
			if err == nil && got.Version != 1 {
				err = fmt.Errorf("put %s: version %d", k, got.Version)
			}
			if err == nil {
				got, err = s.Get(ctx, it.Key)
			}
			if err == nil && (!bytes.Equal(got.Value, it.Value) || len(got.Indexes) != len(it.Indexes)) {
				err = fmt.Errorf("get %s: %+v", it.Key, got)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkStore(b *testing.B) {
	s, _, _ := newStore(b, storetest.Tables)
	storetest.Benchmark(b, s)
}

func TestCreateTablesIdempotent(t *testing.T) {
	ctx := context.Background()
	client := newClient(t)
	prefix := uniquePrefix()
	for i := range 2 {
		if err := dynamo.CreateTables(ctx, client, prefix, metaTables); err != nil {
			t.Fatalf("CreateTables #%d: %v", i+1, err)
		}
	}
	for _, spec := range metaTables {
		out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(prefix + spec.Name)})
		if err != nil {
			t.Fatal(err)
		}
		tbl := out.Table
		if tbl.TableStatus != types.TableStatusActive {
			t.Errorf("%s: status %s", spec.Name, tbl.TableStatus)
		}
		if got := keySchema(tbl.KeySchema); got != "pk/sk" {
			t.Errorf("%s: key schema %s, want pk/sk", spec.Name, got)
		}
		if len(tbl.GlobalSecondaryIndexes) != len(spec.Indexes) {
			t.Fatalf("%s: %d indexes, want %d", spec.Name, len(tbl.GlobalSecondaryIndexes), len(spec.Indexes))
		}
		for _, g := range tbl.GlobalSecondaryIndexes {
			name := aws.ToString(g.IndexName)
			if got, want := keySchema(g.KeySchema), name+"pk/"+name+"sk"; got != want {
				t.Errorf("%s.%s: key schema %s, want %s", spec.Name, name, got, want)
			}
			if g.Projection == nil || g.Projection.ProjectionType != types.ProjectionTypeAll {
				t.Errorf("%s.%s: projection is not ALL", spec.Name, name)
			}
		}
		ttl, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(prefix + spec.Name)})
		if err != nil {
			t.Fatal(err)
		}
		if d := ttl.TimeToLiveDescription; d == nil || d.TimeToLiveStatus != types.TimeToLiveStatusEnabled || aws.ToString(d.AttributeName) != "ttl" {
			t.Errorf("%s: time to live %+v, want ENABLED on ttl", spec.Name, d)
		}
	}

	// TTL on another attribute is reported, not changed.
	other := uniquePrefix()
	if err := dynamo.CreateTables(ctx, client, other, metaTables); err != nil {
		t.Fatal(err)
	}
	if _, err := client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(other + "meta"),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String("expires"), Enabled: aws.Bool(true)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := dynamo.CreateTables(ctx, client, other, metaTables); err == nil || !strings.Contains(err.Error(), `"expires"`) {
		t.Errorf("CreateTables over a table with TTL on another attribute: %v", err)
	}

	// A declared index that the existing table lacks is reported.
	err := dynamo.CreateTables(ctx, client, prefix, []store.TableSpec{{Name: "meta", Indexes: []string{"gsi1", "gsi9"}}})
	if err == nil {
		t.Error("CreateTables over a table without a declared index succeeded")
	}
}

func keySchema(ks []types.KeySchemaElement) string {
	var hash, rng string
	for _, k := range ks {
		switch k.KeyType {
		case types.KeyTypeHash:
			hash = aws.ToString(k.AttributeName)
		case types.KeyTypeRange:
			rng = aws.ToString(k.AttributeName)
		}
	}
	return hash + "/" + rng
}

// TestAttributeLayout reads items back with raw GetItem calls: what the
// adapter writes must be what template.yaml's tables and indexes expect.
func TestAttributeLayout(t *testing.T) {
	ctx := context.Background()
	s, client, prefix := newStore(t, metaTables)
	raw := func(pk, sk string) map[string]types.AttributeValue {
		t.Helper()
		out, err := client.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(prefix + "meta"),
			Key:            map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}, "sk": &types.AttributeValueMemberS{Value: sk}},
			ConsistentRead: aws.Bool(true),
		})
		if err != nil {
			t.Fatal(err)
		}
		return out.Item
	}
	wantS := func(av map[string]types.AttributeValue, name, want string) {
		t.Helper()
		if v, ok := av[name].(*types.AttributeValueMemberS); !ok || v.Value != want {
			t.Errorf("attribute %s = %#v, want S %q", name, av[name], want)
		}
	}
	wantN := func(av map[string]types.AttributeValue, name, want string) {
		t.Helper()
		if v, ok := av[name].(*types.AttributeValueMemberN); !ok || v.Value != want {
			t.Errorf("attribute %s = %#v, want N %s", name, av[name], want)
		}
	}

	it := store.Item{
		Key:     store.Key{Table: "meta", PK: "p", SK: "s"},
		Value:   []byte{0, 1, 2, 0xff},
		Indexes: map[string]store.IndexKey{"gsi1": {PK: "ip", SK: "is"}},
	}
	if _, err := s.Put(ctx, it, store.IfAbsent); err != nil {
		t.Fatal(err)
	}
	av := raw("p", "s")
	wantS(av, "pk", "p")
	wantS(av, "sk", "s")
	wantS(av, "gsi1pk", "ip")
	wantS(av, "gsi1sk", "is")
	wantN(av, "ver", "1")
	if v, ok := av["val"].(*types.AttributeValueMemberB); !ok || !bytes.Equal(v.Value, it.Value) {
		t.Errorf("attribute val = %#v, want B %x", av["val"], it.Value)
	}
	if len(av) != 6 {
		t.Errorf("item has %d attributes, want 6: %v", len(av), av)
	}

	// An unconditional put leaves the index and bumps the version.
	it.Indexes = nil
	got, err := s.Put(ctx, it, store.Always)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 {
		t.Errorf("version after second put = %d, want 2", got.Version)
	}
	av = raw("p", "s")
	wantN(av, "ver", "2")
	if _, ok := av["gsi1pk"]; ok {
		t.Error("gsi1pk still set after a put without the index")
	}
	if _, ok := av["gsi1sk"]; ok {
		t.Error("gsi1sk still set after a put without the index")
	}

	// An expiry is the number attribute ttl, in Unix seconds rounded up;
	// a put without one removes it.
	exp := time.Unix(4102444800, 1) // 2100-01-01T00:00:00.000000001Z
	it.ExpiresAt = exp
	if _, err := s.Put(ctx, it, store.IfVersion(2)); err != nil {
		t.Fatal(err)
	}
	av = raw("p", "s")
	wantN(av, "ttl", "4102444801")
	wantN(av, "ver", "3")
	it.ExpiresAt = time.Time{}
	if _, err := s.Put(ctx, it, store.Always); err != nil {
		t.Fatal(err)
	}
	if av = raw("p", "s"); av["ttl"] != nil {
		t.Errorf("ttl still set after a put without an expiry: %v", av["ttl"])
	}

	// Counters use n, and ttl when they expire.
	if _, err := s.Increment(ctx, store.Key{Table: "meta", PK: "ids", SK: "users"}, 7, time.Time{}); err != nil {
		t.Fatal(err)
	}
	av = raw("ids", "users")
	wantN(av, "n", "7")
	if len(av) != 3 {
		t.Errorf("counter has %d attributes, want 3: %v", len(av), av)
	}
	if _, err := s.Increment(ctx, store.Key{Table: "meta", PK: "ids", SK: "users"}, 1, exp); err != nil {
		t.Fatal(err)
	}
	av = raw("ids", "users")
	wantN(av, "n", "8")
	wantN(av, "ttl", "4102444801")
}

// countingClient returns a client that counts the operations it sends, by
// name (SDK retries of one operation count once).
func countingClient(t testing.TB) (*dynamodb.Client, func() map[string]int) {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	counts := map[string]int{}
	client := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("countOperations",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					mu.Lock()
					counts[awsmiddleware.GetOperationName(ctx)]++
					mu.Unlock()
					return next.HandleInitialize(ctx, in)
				}), middleware.After)
		})
	})
	take := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		c := counts
		counts = map[string]int{}
		return c
	}
	return client, take
}

// TestRequestsPerCall pins how many DynamoDB requests the expiry handling
// costs: one per Put and Increment unless the item has expired.
func TestRequestsPerCall(t *testing.T) {
	ctx := context.Background()
	client, take := countingClient(t)
	prefix := uniquePrefix()
	if err := dynamo.CreateTables(ctx, client, prefix, metaTables); err != nil {
		t.Fatal(err)
	}
	s := dynamo.New(client, prefix, metaTables)
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	expect := func(what string, want map[string]int) {
		t.Helper()
		if got := take(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: requests %v, want %v", what, got, want)
		}
	}
	take()

	ctr := store.Key{Table: "meta", PK: "rate", SK: "w1"}
	for _, c := range []struct {
		what    string
		delta   int64
		exp     time.Time
		want    int64
		updates int
	}{
		{"increment of an absent counter", 1, future, 1, 1},
		{"increment of a live counter", 1, future, 2, 1},
		{"increment that sets a past expiry", 1, past, 3, 1},
		{"read of an expired counter", 0, time.Time{}, 0, 1},
		{"increment of an expired counter", 5, future, 5, 2},
		{"increment without expiry", 1, time.Time{}, 6, 1},
	} {
		n, err := s.Increment(ctx, ctr, c.delta, c.exp)
		if err != nil || n != c.want {
			t.Fatalf("%s: %d, %v; want %d", c.what, n, err, c.want)
		}
		expect(c.what, map[string]int{"UpdateItem": c.updates})
	}

	k := store.Key{Table: "meta", PK: "p", SK: "s"}
	for _, c := range []struct {
		what    string
		exp     time.Time
		cond    store.Cond
		version int64
		updates int
	}{
		{"put of an absent item", past, store.Always, 1, 1},
		{"put over an expired item", future, store.Always, 1, 2},
		{"put over a live item", past, store.Always, 2, 1},
		{"put IfAbsent over an expired item", future, store.IfAbsent, 1, 1},
		{"put IfVersion", future, store.IfVersion(1), 2, 1},
	} {
		it, err := s.Put(ctx, store.Item{Key: k, Value: []byte("v"), ExpiresAt: c.exp}, c.cond)
		if err != nil || it.Version != c.version {
			t.Fatalf("%s: version %d, %v; want %d", c.what, it.Version, err, c.version)
		}
		expect(c.what, map[string]int{"UpdateItem": c.updates})
	}

	// A transaction with an unconditional put over an expired item is sent
	// twice, the second time with that put in its other form.
	if _, err := s.Put(ctx, store.Item{Key: k, ExpiresAt: past}, store.Always); err != nil {
		t.Fatal(err)
	}
	take()
	k2 := store.Key{Table: "meta", PK: "p", SK: "t"}
	if err := s.Transact(ctx, []store.Write{
		store.PutWrite(store.Item{Key: k, Value: []byte("tx")}, store.Always),
		store.PutWrite(store.Item{Key: k2, Value: []byte("tx")}, store.Always),
	}); err != nil {
		t.Fatal(err)
	}
	expect("transaction over an expired item", map[string]int{"TransactWriteItems": 2})
	if it, err := s.Get(ctx, k); err != nil || it.Version != 1 {
		t.Fatalf("after the transaction: %+v, %v; want version 1", it, err)
	}
	take()

	// A query reads past a run of expired items in a few requests, not
	// one per item: each continuation asks for twice as many.
	var ws []store.Write
	for i := range 200 {
		it := store.Item{Key: store.Key{Table: "meta", PK: "q", SK: fmt.Sprintf("%03d", i)}, ExpiresAt: past}
		if i == 0 || i == 199 {
			it.ExpiresAt = time.Time{}
		}
		ws = append(ws, store.PutWrite(it, store.Always))
		if len(ws) == store.MaxTransactWrites {
			if err := s.Transact(ctx, ws); err != nil {
				t.Fatal(err)
			}
			ws = ws[:0]
		}
	}
	take()
	p, err := s.Query(ctx, store.Query{Table: "meta", PK: "q", Limit: 1})
	if err != nil || len(p.Items) != 1 || p.Cursor == "" {
		t.Fatalf("first page: %+v, %v", p, err)
	}
	// 2, then 4, 8, ..., 256 items asked for: 8 requests reach item 199.
	if got := take()["Query"]; got > 8 {
		t.Errorf("first page took %d Query requests, want at most 8", got)
	}
	p, err = s.Query(ctx, store.Query{Table: "meta", PK: "q", Limit: 1, Cursor: p.Cursor})
	if err != nil || len(p.Items) != 1 || p.Items[0].SK != "199" || p.Cursor != "" {
		t.Fatalf("second page: %+v, %v", p, err)
	}
	if got := take()["Query"]; got > 8 {
		t.Errorf("second page took %d Query requests, want at most 8", got)
	}
}

func TestAdapterSpecifics(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t, metaTables)

	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := dynamo.New(newClient(t), "no-such-prefix-", metaTables).Ping(ctx); err == nil {
		t.Error("Ping without tables succeeded")
	}

	// An index the table does not have is invalid, for puts and queries.
	_, err := s.Put(ctx, store.Item{Key: store.Key{Table: "meta", PK: "a", SK: "b"}, Indexes: map[string]store.IndexKey{"nope": {PK: "x", SK: "y"}}}, store.Always)
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("put with unknown index: %v, want ErrInvalid", err)
	}
	_, err = s.Query(ctx, store.Query{Table: "meta", Index: "nope", PK: "x"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("query of unknown index: %v, want ErrInvalid", err)
	}
	// So is a table that was not declared to New.
	_, err = s.Put(ctx, store.Item{Key: store.Key{Table: "undeclared", PK: "a", SK: "b"}}, store.Always)
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "not declared") {
		t.Errorf("put to an undeclared table: %v, want ErrInvalid", err)
	}

	// Cursors are checked against the query they continue.
	for i := range 3 {
		if _, err := s.Put(ctx, store.Item{Key: store.Key{Table: "meta", PK: "c", SK: fmt.Sprint(i)}}, store.Always); err != nil {
			t.Fatal(err)
		}
	}
	page, err := s.Query(ctx, store.Query{Table: "meta", PK: "c", Limit: 2})
	if err != nil || len(page.Items) != 2 || page.Cursor == "" {
		t.Fatalf("first page: %v, %+v", err, page)
	}
	for _, q := range []store.Query{
		{Table: "meta", PK: "other", Cursor: page.Cursor},
		{Table: "meta", PK: "c", SKPrefix: "2", Cursor: page.Cursor},
		{Table: "meta", PK: "c", Index: "gsi1", Cursor: page.Cursor},
		{Table: "meta", PK: "c", Cursor: "!!"},
		{Table: "meta", PK: "c", Cursor: "e30"}, // {}
	} {
		if _, err := s.Query(ctx, q); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("query %+v: %v, want ErrInvalid", q, err)
		}
	}
	page, err = s.Query(ctx, store.Query{Table: "meta", PK: "c", Limit: 2, Cursor: page.Cursor})
	if err != nil || len(page.Items) != 1 || page.Cursor != "" {
		t.Fatalf("last page: %v, %+v", err, page)
	}

	// A transaction's failed condition names its write.
	k := store.Key{Table: "meta", PK: "tx", SK: "1"}
	err = s.Transact(ctx, []store.Write{
		store.PutWrite(store.Item{Key: store.Key{Table: "meta", PK: "tx", SK: "0"}}, store.IfAbsent),
		store.CheckWrite(store.Key{Table: "meta", PK: "tx", SK: "2"}, store.Always),
		store.DeleteWrite(k, store.IfExists),
	})
	var txe *store.TxError
	if !errors.As(err, &txe) || txe.Index != 2 || !errors.Is(err, store.ErrConditionFailed) {
		t.Errorf("transaction: %v, want TxError at 2", err)
	}
}
