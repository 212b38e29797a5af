// Package dynamo is the DynamoDB adapter of the store port.
//
// Each logical table is one DynamoDB table named prefix+name with string keys
// "pk" (HASH) and "sk" (RANGE). An item's encoded value is the binary
// attribute "val" and its version the number attribute "ver"; its entry in an
// index named X is the pair of string attributes "Xpk"/"Xsk", which are the
// keys of a global secondary index X that projects all attributes. Counters
// keep their value in the number attribute "n". An item or counter that
// expires has its expiry in the number attribute "ttl" (Unix seconds), the
// table's TTL attribute. CreateTables creates tables in exactly this layout,
// with TTL enabled, and template.yaml declares the same.
//
// Puts are UpdateItem calls, so the version is maintained atomically by
// DynamoDB (ADD ver 1) even for unconditional puts, and the index attributes
// of indexes the item no longer belongs to are removed in the same call;
// the store knows them from the table specs given to New, so it needs no
// DescribeTable permission.
//
// Expiry: DynamoDB's TTL deletes expired items only eventually (typically
// within two days), so every read and condition filters them itself: Get
// drops an item whose ttl is at or before now, Query has a filter
// expression, and conditions treat an expired item as absent. One thing an
// update expression cannot do is choose by the item's state, so an
// unconditional put and an Increment first assume the item is live or
// absent (one UpdateItem, conditioned on that) and, only when it turns out
// to be expired, send a second UpdateItem that restarts it (version 1,
// counter from 0), conditioned on it still being expired.
//
// Reads of a table are strongly consistent; queries of an index are
// eventually consistent, as DynamoDB's global secondary indexes are. Expiry
// is judged by this process's clock.
package dynamo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/certfleet/certfleet/shared/store"
)

// Attribute names of the physical layout.
const (
	attrPK      = "pk"
	attrSK      = "sk"
	attrValue   = "val"
	attrVersion = "ver"
	attrCounter = "n"
	attrTTL     = "ttl"
)

// pingKey is the key Ping reads in the first declared table; it need not
// exist.
const pingKey = "health"

// conflictRetries bounds how often a write is retried that DynamoDB
// rejected, without applying it, because a transaction held its item: a
// transaction cancelled only for TransactionConflict, or a single-item write
// failing with TransactionConflictException (which the SDK does not retry).
const conflictRetries = 5

// stateRetries bounds how often an unconditional put or an Increment
// switches between its live and its expired form because other writers
// kept changing the item between its requests.
const stateRetries = 8

// Store is the DynamoDB store.
type Store struct {
	client  *dynamodb.Client
	prefix  string
	tables  []store.TableSpec
	indexes map[string][]string // logical table name -> its index names
}

var _ store.Store = (*Store)(nil)

// New returns a store over client for the declared tables (at least one),
// whose physical names are tablePrefix + the logical name. Knowing the
// indexes up front lets a put clear the index attributes it no longer sets
// without asking DynamoDB (no DescribeTable permission needed); a table or
// index that was not declared is ErrInvalid.
func New(client *dynamodb.Client, tablePrefix string, tables []store.TableSpec) *Store {
	s := &Store{client: client, prefix: tablePrefix, tables: tables, indexes: map[string][]string{}}
	for _, t := range tables {
		s.indexes[t.Name] = slices.Sorted(slices.Values(t.Indexes))
	}
	return s
}

func (s *Store) table(name string) *string { return aws.String(s.prefix + name) }

// IndexAttrs returns the attribute names that hold an item's key in the
// index named name.
func IndexAttrs(name string) (pk, sk string) { return name + attrPK, name + attrSK }

func keyAttrs(k store.Key) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: &types.AttributeValueMemberS{Value: k.PK},
		attrSK: &types.AttributeValueMemberS{Value: k.SK},
	}
}

// Get returns the item at k, or store.ErrNotFound if it is absent or
// expired.
func (s *Store) Get(ctx context.Context, k store.Key) (store.Item, error) {
	if err := store.ValidateKey(k); err != nil {
		return store.Item{}, fmt.Errorf("dynamo: get: %w", err)
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      s.table(k.Table),
		Key:            keyAttrs(k),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return store.Item{}, wrap("get "+k.String(), err)
	}
	if out.Item == nil {
		return store.Item{}, fmt.Errorf("dynamo: get %s: %w", k, store.ErrNotFound)
	}
	it, err := decodeItem(k.Table, out.Item)
	if err != nil {
		return store.Item{}, fmt.Errorf("dynamo: get %s: %w", k, err)
	}
	if store.Expired(store.ExpiryUnix(it.ExpiresAt), time.Now()) {
		return store.Item{}, fmt.Errorf("dynamo: get %s: %w", k, store.ErrNotFound)
	}
	return it, nil
}

// Put writes it if c holds (an expired item counts as absent) and returns
// it with its new version and stored expiry. It is one UpdateItem, except
// that an unconditional put over an expired item takes a second one (see
// the package doc).
func (s *Store) Put(ctx context.Context, it store.Item, c store.Cond) (store.Item, error) {
	if err := store.ValidateItem(it); err != nil {
		return store.Item{}, fmt.Errorf("dynamo: put: %w", err)
	}
	var ver int64
	for attempt, overExpired := 0, false; ; attempt, overExpired = attempt+1, !overExpired {
		upd, err := s.putUpdate(it, c, time.Now().Unix(), overExpired)
		if err != nil {
			return store.Item{}, err
		}
		in := &dynamodb.UpdateItemInput{
			TableName:                 upd.TableName,
			Key:                       upd.Key,
			UpdateExpression:          upd.UpdateExpression,
			ConditionExpression:       upd.ConditionExpression,
			ExpressionAttributeNames:  upd.ExpressionAttributeNames,
			ExpressionAttributeValues: upd.ExpressionAttributeValues,
		}
		// When the update fixes the new version, nothing need come back
		// (UPDATED_NEW would return the value too).
		switch {
		case c.Kind == store.CondAbsent || overExpired:
			ver = 1
		case c.Kind == store.CondVersion:
			ver = c.Version + 1
		default:
			in.ReturnValues = types.ReturnValueUpdatedNew
		}
		out, err := retryConflict(ctx, func() (*dynamodb.UpdateItemOutput, error) { return s.client.UpdateItem(ctx, in) })
		var ccf *types.ConditionalCheckFailedException
		if c.Kind == store.CondNone && errors.As(err, &ccf) {
			// The item was expired (live form) or no longer is (expired
			// form): try the other form.
			if attempt < stateRetries {
				continue
			}
			return store.Item{}, fmt.Errorf("dynamo: put %s: the item kept changing between expired and live; gave up after %d attempts", it.Key, attempt+1)
		}
		if err != nil {
			return store.Item{}, wrap("put "+it.Key.String(), err)
		}
		if in.ReturnValues != "" {
			if ver, err = numberAttr(out.Attributes, attrVersion); err != nil {
				return store.Item{}, fmt.Errorf("dynamo: put %s: %w", it.Key, err)
			}
		}
		break
	}
	res := store.Item{Key: it.Key, Value: slices.Clone(it.Value), Version: ver, ExpiresAt: store.ExpiryTime(store.ExpiryUnix(it.ExpiresAt))}
	if len(it.Indexes) > 0 {
		res.Indexes = make(map[string]store.IndexKey, len(it.Indexes))
		for name, ik := range it.Indexes {
			res.Indexes[name] = ik
		}
	}
	return res, nil
}

// putUpdate builds the update that writes it under condition c at Unix
// second now: the value, index and ttl attributes are set, the attributes
// of the table's other indexes (and ttl, for an item that does not expire)
// removed, and the version incremented (from absent, to 1) or, when the
// item counts as absent, set to 1.
//
// An unconditional put (CondNone) has two forms, because an update
// expression cannot choose by the item's state: overExpired=false
// increments the version on condition that the item is live or absent;
// overExpired=true sets it to 1 on condition that the item is expired.
// Callers try the first and switch when its condition fails.
func (s *Store) putUpdate(it store.Item, c store.Cond, now int64, overExpired bool) (*types.Update, error) {
	known, err := s.tableIndexes(it.Table)
	if err != nil {
		return nil, err
	}
	for name := range it.Indexes {
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("dynamo: put %s: %w: table %s has no index %q", it.Key, store.ErrInvalid, it.Table, name)
		}
	}
	e := newExpr()
	var set, remove []string
	if len(it.Value) > 0 {
		set = append(set, e.name(attrValue)+" = "+e.value(&types.AttributeValueMemberB{Value: it.Value}))
	} else {
		remove = append(remove, e.name(attrValue))
	}
	for _, name := range known { // sorted, so expressions are deterministic
		pkAttr, skAttr := IndexAttrs(name)
		if ik, ok := it.Indexes[name]; ok {
			set = append(set,
				e.name(pkAttr)+" = "+e.value(&types.AttributeValueMemberS{Value: ik.PK}),
				e.name(skAttr)+" = "+e.value(&types.AttributeValueMemberS{Value: ik.SK}))
		} else {
			remove = append(remove, e.name(pkAttr), e.name(skAttr))
		}
	}
	if exp := store.ExpiryUnix(it.ExpiresAt); exp != 0 {
		set = append(set, e.name(attrTTL)+" = "+e.value(number(exp)))
	} else {
		remove = append(remove, e.name(attrTTL))
	}
	cond := e.cond(c, now)
	restart := c.Kind == store.CondAbsent
	if c.Kind == store.CondNone {
		restart = overExpired
		if overExpired {
			cond = aws.String(e.expired(now))
		} else {
			cond = aws.String(e.live(now))
		}
	}
	one := e.value(number(1))
	if restart {
		set = append(set, e.name(attrVersion)+" = "+one)
	}
	var b strings.Builder
	if len(set) > 0 {
		b.WriteString("SET " + strings.Join(set, ", "))
	}
	if len(remove) > 0 {
		b.WriteString(" REMOVE " + strings.Join(remove, ", "))
	}
	if !restart {
		b.WriteString(" ADD " + e.name(attrVersion) + " " + one)
	}
	return &types.Update{
		TableName:                 s.table(it.Table),
		Key:                       keyAttrs(it.Key),
		UpdateExpression:          aws.String(strings.TrimSpace(b.String())),
		ConditionExpression:       cond,
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
	}, nil
}

// Delete removes the item at k if c holds (an expired item counts as
// absent; a delete that allows absence removes it).
func (s *Store) Delete(ctx context.Context, k store.Key, c store.Cond) error {
	if err := store.ValidateKey(k); err != nil {
		return fmt.Errorf("dynamo: delete: %w", err)
	}
	e := newExpr()
	cond := e.cond(c, time.Now().Unix())
	in := &dynamodb.DeleteItemInput{
		TableName:                 s.table(k.Table),
		Key:                       keyAttrs(k),
		ConditionExpression:       cond,
		ExpressionAttributeNames:  e.namesOrNil(),
		ExpressionAttributeValues: e.valuesOrNil(),
	}
	_, err := retryConflict(ctx, func() (*dynamodb.DeleteItemOutput, error) { return s.client.DeleteItem(ctx, in) })
	if err != nil {
		return wrap("delete "+k.String(), err)
	}
	return nil
}

// Increment adds delta to the counter at k and returns its new value; an
// absent or expired counter counts from 0, and a non-zero expiresAt sets
// its ttl (see store.Store).
//
// It is one UpdateItem in the common case: ADD n delta (and SET ttl) on
// condition that the counter has no ttl or one after now, which also
// creates an absent counter. Only when that condition fails, because the
// counter has expired, a second UpdateItem restarts it (SET n = delta, and
// ttl set or removed) on condition that it is still expired; if another
// caller restarted it in between, that fails too and the first is tried
// again, at most stateRetries times. Reading an expired counter (delta 0,
// no expiresAt) returns 0 without the second request.
func (s *Store) Increment(ctx context.Context, k store.Key, delta int64, expiresAt time.Time) (int64, error) {
	if err := store.ValidateCounter(k, expiresAt); err != nil {
		return 0, fmt.Errorf("dynamo: increment: %w", err)
	}
	exp := store.ExpiryUnix(expiresAt)
	for attempt := 0; ; attempt++ {
		n, err := s.addToLive(ctx, k, delta, exp)
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			return n, err
		}
		if delta == 0 && exp == 0 {
			return 0, nil
		}
		err = s.restartCounter(ctx, k, delta, exp)
		if err == nil {
			return delta, nil
		}
		if !errors.As(err, &ccf) {
			return 0, err
		}
		if attempt >= stateRetries {
			return 0, fmt.Errorf("dynamo: increment %s: the counter kept changing between expired and live; gave up after %d attempts", k, attempt+1)
		}
	}
}

// addToLive adds delta to the counter at k if it is absent or live, and
// sets its ttl to exp unless exp is 0. A failed condition (the counter has
// expired) is returned unwrapped as *types.ConditionalCheckFailedException.
func (s *Store) addToLive(ctx context.Context, k store.Key, delta, exp int64) (int64, error) {
	e := newExpr()
	upd := "ADD " + e.name(attrCounter) + " " + e.value(number(delta))
	if exp != 0 {
		upd = "SET " + e.name(attrTTL) + " = " + e.value(number(exp)) + " " + upd
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                 s.table(k.Table),
		Key:                       keyAttrs(k),
		UpdateExpression:          aws.String(upd),
		ConditionExpression:       aws.String(e.live(time.Now().Unix())),
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
		// ALL_NEW, not UPDATED_NEW: moto leaves out an attribute that an
		// ADD of 0 did not change. A counter item holds only its keys, n
		// and ttl.
		ReturnValues: types.ReturnValueAllNew,
	}
	out, err := retryConflict(ctx, func() (*dynamodb.UpdateItemOutput, error) { return s.client.UpdateItem(ctx, in) })
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return 0, ccf
	}
	if err != nil {
		return 0, wrap("increment "+k.String(), err)
	}
	n, err := numberAttr(out.Attributes, attrCounter)
	if err != nil {
		return 0, fmt.Errorf("dynamo: increment %s: %w", k, err)
	}
	return n, nil
}

// restartCounter sets the counter at k to delta, with ttl exp (none if 0),
// if it is expired. A failed condition (it is not, any more) is returned
// unwrapped as *types.ConditionalCheckFailedException.
func (s *Store) restartCounter(ctx context.Context, k store.Key, delta, exp int64) error {
	e := newExpr()
	upd := "SET " + e.name(attrCounter) + " = " + e.value(number(delta))
	if exp != 0 {
		upd += ", " + e.name(attrTTL) + " = " + e.value(number(exp))
	} else {
		upd += " REMOVE " + e.name(attrTTL)
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                 s.table(k.Table),
		Key:                       keyAttrs(k),
		UpdateExpression:          aws.String(upd),
		ConditionExpression:       aws.String(e.expired(time.Now().Unix())),
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
	}
	_, err := retryConflict(ctx, func() (*dynamodb.UpdateItemOutput, error) { return s.client.UpdateItem(ctx, in) })
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ccf
	}
	if err != nil {
		return wrap("increment "+k.String(), err)
	}
	return nil
}

// Query returns one page of a partition of a table or index, leaving out
// expired items. Page.Cursor is "" exactly when no more (unexpired) items
// follow.
func (s *Store) Query(ctx context.Context, q store.Query) (store.Page, error) {
	limit, err := store.ValidateQuery(q)
	if err != nil {
		return store.Page{}, fmt.Errorf("dynamo: query: %w", err)
	}
	where := q.Table
	pkAttr, skAttr := attrPK, attrSK
	if q.Index != "" {
		known, err := s.tableIndexes(q.Table)
		if err != nil {
			return store.Page{}, err
		}
		if !slices.Contains(known, q.Index) {
			return store.Page{}, fmt.Errorf("dynamo: query: %w: table %s has no index %q", store.ErrInvalid, q.Table, q.Index)
		}
		pkAttr, skAttr = IndexAttrs(q.Index)
		where += "." + q.Index
	}
	var start map[string]types.AttributeValue
	if q.Cursor != "" {
		if start, err = decodeCursor(q, pkAttr, skAttr); err != nil {
			return store.Page{}, fmt.Errorf("dynamo: query %s: %w", where, err)
		}
	}

	e := newExpr()
	kc := e.name(pkAttr) + " = " + e.value(&types.AttributeValueMemberS{Value: q.PK})
	var sk string // named only when used: DynamoDB rejects unused names
	if q.SKPrefix != "" || q.SKFrom != "" || q.SKTo != "" {
		sk = e.name(skAttr)
	}
	switch {
	case q.SKPrefix != "":
		kc += " AND begins_with(" + sk + ", " + e.value(&types.AttributeValueMemberS{Value: q.SKPrefix}) + ")"
	case q.SKFrom != "" && q.SKTo != "":
		kc += " AND " + sk + " BETWEEN " + e.value(&types.AttributeValueMemberS{Value: q.SKFrom}) +
			" AND " + e.value(&types.AttributeValueMemberS{Value: q.SKTo})
	case q.SKFrom != "":
		kc += " AND " + sk + " >= " + e.value(&types.AttributeValueMemberS{Value: q.SKFrom})
	case q.SKTo != "":
		kc += " AND " + sk + " <= " + e.value(&types.AttributeValueMemberS{Value: q.SKTo})
	}
	in := &dynamodb.QueryInput{
		TableName:                 s.table(q.Table),
		KeyConditionExpression:    aws.String(kc),
		FilterExpression:          aws.String(e.live(time.Now().Unix())),
		ExpressionAttributeNames:  e.names,
		ExpressionAttributeValues: e.values,
		ScanIndexForward:          aws.Bool(!q.Reverse),
		ExclusiveStartKey:         start,
	}
	if q.Index != "" {
		in.IndexName = aws.String(q.Index)
	} else {
		in.ConsistentRead = aws.Bool(true)
	}

	// Ask for one item more than the page holds: DynamoDB returns a
	// LastEvaluatedKey whenever it stopped at the limit, even if nothing
	// follows, so the extra item is what tells whether there is a next page.
	// DynamoDB applies Limit before the filter, so expired items make a
	// response short; it is continued (as is one cut short by the 1 MB
	// cap) until the page and its extra item are found or nothing follows.
	// A continuation asks for at least twice as many items as the request
	// before, so a run of expired items costs a few requests, not one per
	// item; items beyond the extra one are read and dropped.
	var raw []map[string]types.AttributeValue
	ask := limit + 1
	for {
		in.Limit = aws.Int32(int32(ask))
		out, err := s.client.Query(ctx, in)
		if err != nil {
			return store.Page{}, wrap("query "+where, err)
		}
		raw = append(raw, out.Items...)
		if len(raw) > limit || len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
		ask = min(max(limit+1-len(raw), 2*ask), store.MaxQueryLimit+1)
	}

	var page store.Page
	if len(raw) > limit {
		raw = raw[:limit]
		page.Cursor = encodeCursor(raw[limit-1], pkAttr, skAttr)
	}
	page.Items = make([]store.Item, 0, len(raw))
	for _, av := range raw {
		it, err := decodeItem(q.Table, av)
		if err != nil {
			return store.Page{}, fmt.Errorf("dynamo: query %s: %w", where, err)
		}
		page.Items = append(page.Items, it)
	}
	return page, nil
}

// Transact applies writes all or none; expired items count as absent. An
// unconditional put whose item turns out to be expired (or no longer
// expired) has its form switched (see putUpdate) and the transaction is
// sent again.
func (s *Store) Transact(ctx context.Context, writes []store.Write) error {
	if err := store.ValidateTransact(writes); err != nil {
		return fmt.Errorf("dynamo: transact: %w", err)
	}
	overExpired := make([]bool, len(writes))
	for attempt, switches := 0, 0; ; {
		in, err := s.transactInput(writes, overExpired, time.Now().Unix())
		if err != nil {
			return err
		}
		_, err = s.client.TransactWriteItems(ctx, in)
		if err == nil {
			return nil
		}
		var tce *types.TransactionCanceledException
		if errors.As(err, &tce) {
			conflict, switched := false, false
			for i, r := range tce.CancellationReasons {
				switch aws.ToString(r.Code) {
				case "ConditionalCheckFailed":
					if i < len(writes) && writes[i].Op == store.OpPut && writes[i].Cond.Kind == store.CondNone {
						overExpired[i] = !overExpired[i]
						switched = true
						continue
					}
					return fmt.Errorf("dynamo: transact: %w", &store.TxError{Index: i})
				case "TransactionConflict":
					conflict = true
				}
			}
			if switched && switches < stateRetries {
				switches++
				continue
			}
			if conflict && attempt < conflictRetries {
				if err := sleep(ctx, backoff(attempt)); err != nil {
					return fmt.Errorf("dynamo: transact: %w", err)
				}
				attempt++
				continue
			}
		}
		return wrap("transact", err)
	}
}

// transactInput builds the request for writes at Unix second now, with
// each unconditional put in the form overExpired says.
func (s *Store) transactInput(writes []store.Write, overExpired []bool, now int64) (*dynamodb.TransactWriteItemsInput, error) {
	items := make([]types.TransactWriteItem, len(writes))
	for i, w := range writes {
		switch w.Op {
		case store.OpPut:
			upd, err := s.putUpdate(w.Item, w.Cond, now, overExpired[i])
			if err != nil {
				return nil, fmt.Errorf("dynamo: transact write %d: %w", i, err)
			}
			items[i].Update = upd
		case store.OpDelete:
			e := newExpr()
			cond := e.cond(w.Cond, now)
			items[i].Delete = &types.Delete{
				TableName:                 s.table(w.Item.Table),
				Key:                       keyAttrs(w.Item.Key),
				ConditionExpression:       cond,
				ExpressionAttributeNames:  e.namesOrNil(),
				ExpressionAttributeValues: e.valuesOrNil(),
			}
		case store.OpCheck:
			e := newExpr()
			cond := e.cond(w.Cond, now)
			if cond == nil { // a check of nothing: keep the write's position
				cond = aws.String("attribute_exists(" + e.name(attrPK) + ") OR attribute_not_exists(" + e.name(attrPK) + ")")
			}
			items[i].ConditionCheck = &types.ConditionCheck{
				TableName:                 s.table(w.Item.Table),
				Key:                       keyAttrs(w.Item.Key),
				ConditionExpression:       cond,
				ExpressionAttributeNames:  e.namesOrNil(),
				ExpressionAttributeValues: e.valuesOrNil(),
			}
		}
	}
	// A new input per attempt, so the SDK gives each its own
	// ClientRequestToken: a new attempt, not a replay.
	return &dynamodb.TransactWriteItemsInput{TransactItems: items}, nil
}

// Ping reads one key of the first declared table (absent is fine): the
// cheapest call that a read-only policy allows and that proves table and
// credentials.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                s.table(s.tables[0].Name),
		Key:                      keyAttrs(store.Key{PK: pingKey, SK: pingKey}),
		ProjectionExpression:     aws.String("#pk"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK},
	})
	if err != nil {
		return wrap("ping", err)
	}
	return nil
}

// tableIndexes returns the sorted index names of a declared table.
func (s *Store) tableIndexes(table string) ([]string, error) {
	names, ok := s.indexes[table]
	if !ok {
		return nil, fmt.Errorf("dynamo: %w: table %q was not declared", store.ErrInvalid, table)
	}
	return names, nil
}

// decodeItem turns a DynamoDB item of the layout above into a store.Item.
func decodeItem(table string, av map[string]types.AttributeValue) (store.Item, error) {
	var it store.Item
	it.Table = table
	var ok bool
	if it.PK, ok = stringAttr(av, attrPK); !ok {
		return store.Item{}, errors.New("item without a string pk")
	}
	if it.SK, ok = stringAttr(av, attrSK); !ok {
		return store.Item{}, errors.New("item without a string sk")
	}
	if b, ok := av[attrValue].(*types.AttributeValueMemberB); ok && len(b.Value) > 0 {
		it.Value = b.Value
	}
	if _, ok := av[attrVersion]; ok {
		v, err := numberAttr(av, attrVersion)
		if err != nil {
			return store.Item{}, fmt.Errorf("item %s: %w", it.Key, err)
		}
		it.Version = v
	}
	if _, ok := av[attrTTL]; ok {
		exp, err := numberAttr(av, attrTTL)
		if err != nil {
			return store.Item{}, fmt.Errorf("item %s: %w", it.Key, err)
		}
		it.ExpiresAt = store.ExpiryTime(exp)
	}
	for name := range av {
		idx, found := strings.CutSuffix(name, attrPK)
		if !found || idx == "" {
			continue
		}
		pkAttr, skAttr := IndexAttrs(idx)
		ipk, ok1 := stringAttr(av, pkAttr)
		isk, ok2 := stringAttr(av, skAttr)
		if !ok1 || !ok2 {
			continue
		}
		if it.Indexes == nil {
			it.Indexes = map[string]store.IndexKey{}
		}
		it.Indexes[idx] = store.IndexKey{PK: ipk, SK: isk}
	}
	return it, nil
}

func stringAttr(av map[string]types.AttributeValue, name string) (string, bool) {
	s, ok := av[name].(*types.AttributeValueMemberS)
	if !ok {
		return "", false
	}
	return s.Value, true
}

func number(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

func numberAttr(av map[string]types.AttributeValue, name string) (int64, error) {
	n, ok := av[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, fmt.Errorf("attribute %q missing or not a number", name)
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %q: %w", name, err)
	}
	return v, nil
}

// The cursor is the key of the last item of a page: the table's key
// attributes and, for an index query, the index's. It is base64url JSON, so
// opaque to callers but easy to check.
func encodeCursor(av map[string]types.AttributeValue, pkAttr, skAttr string) string {
	m := map[string]string{}
	for _, name := range []string{attrPK, attrSK, pkAttr, skAttr} {
		if v, ok := stringAttr(av, name); ok {
			m[name] = v
		}
	}
	b, _ := json.Marshal(m) // a map of strings always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor checks that a cursor was made for a query of this partition
// and range and returns it as an ExclusiveStartKey.
func decodeCursor(q store.Query, pkAttr, skAttr string) (map[string]types.AttributeValue, error) {
	bad := fmt.Errorf("%w: malformed cursor", store.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
	if err != nil {
		return nil, bad
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, bad
	}
	want := map[string]bool{attrPK: true, attrSK: true, pkAttr: true, skAttr: true}
	if len(m) != len(want) {
		return nil, bad
	}
	for name := range want {
		if _, ok := m[name]; !ok {
			return nil, bad
		}
	}
	if err := store.ValidateKey(store.Key{Table: q.Table, PK: m[attrPK], SK: m[attrSK]}); err != nil {
		return nil, bad
	}
	sk := m[skAttr]
	switch {
	case m[pkAttr] != q.PK,
		q.SKPrefix != "" && !strings.HasPrefix(sk, q.SKPrefix),
		q.SKFrom != "" && sk < q.SKFrom,
		q.SKTo != "" && sk > q.SKTo:
		return nil, fmt.Errorf("%w: cursor belongs to another query", store.ErrInvalid)
	}
	av := make(map[string]types.AttributeValue, len(m))
	for name, v := range m {
		av[name] = &types.AttributeValueMemberS{Value: v}
	}
	return av, nil
}

// expr collects expression attribute names and values under placeholders.
type expr struct {
	names  map[string]string
	values map[string]types.AttributeValue
	byName map[string]string
}

func newExpr() *expr {
	return &expr{names: map[string]string{}, values: map[string]types.AttributeValue{}, byName: map[string]string{}}
}

func (e *expr) name(attr string) string {
	if p, ok := e.byName[attr]; ok {
		return p
	}
	p := "#a" + strconv.Itoa(len(e.names))
	e.names[p] = attr
	e.byName[attr] = p
	return p
}

func (e *expr) value(v types.AttributeValue) string {
	p := ":v" + strconv.Itoa(len(e.values))
	e.values[p] = v
	return p
}

// cond returns the condition expression for c at Unix second now, or nil
// for none. An expired item counts as absent.
func (e *expr) cond(c store.Cond, now int64) *string {
	switch c.Kind {
	case store.CondAbsent:
		return aws.String("attribute_not_exists(" + e.name(attrPK) + ") OR " + e.expired(now))
	case store.CondExists:
		return aws.String("attribute_exists(" + e.name(attrPK) + ") AND " + e.live(now))
	case store.CondVersion:
		return aws.String(e.name(attrVersion) + " = " + e.value(number(c.Version)) + " AND " + e.live(now))
	}
	return nil
}

// live is a condition that holds for an item that does not expire or
// expires after Unix second now (and for an absent item).
func (e *expr) live(now int64) string {
	t := e.name(attrTTL)
	return "(attribute_not_exists(" + t + ") OR " + t + " > " + e.value(number(now)) + ")"
}

// expired is a condition that holds for an item that expired at or before
// Unix second now (never for an absent one).
func (e *expr) expired(now int64) string {
	return e.name(attrTTL) + " <= " + e.value(number(now))
}

// DynamoDB rejects empty maps of expression names or values.
func (e *expr) namesOrNil() map[string]string {
	if len(e.names) == 0 {
		return nil
	}
	return e.names
}

func (e *expr) valuesOrNil() map[string]types.AttributeValue {
	if len(e.values) == 0 {
		return nil
	}
	return e.values
}

// retryConflict calls fn again while it fails with a transaction conflict.
func retryConflict[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		out, err := fn()
		var tce *types.TransactionConflictException
		if err == nil || !errors.As(err, &tce) || attempt >= conflictRetries {
			return out, err
		}
		if serr := sleep(ctx, backoff(attempt)); serr != nil {
			return out, err
		}
	}
}

// wrap prefixes err and maps a failed condition to store.ErrConditionFailed
// and a request DynamoDB refuses as malformed (say, a transaction over its
// 4 MB total) to store.ErrInvalid, keeping DynamoDB's message.
func wrap(op string, err error) error {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("dynamo: %s: %w", op, store.ErrConditionFailed)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "ValidationException" {
		return fmt.Errorf("dynamo: %s: %w: %s", op, store.ErrInvalid, apiErr.ErrorMessage())
	}
	return fmt.Errorf("dynamo: %s: %w", op, err)
}

func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << attempt
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
