package acmeacct

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/store"
)

// MaxAccountsPerUser bounds how many ACME accounts one user keeps.
const MaxAccountsPerUser = 200

// Seed 004's messages for its business rules (code 3002).
const (
	MsgDisableDefault = "cannot disable default account, please set another account as default first"
	MsgDeleteDefault  = "cannot delete default account, please set another account as default first"
	MsgRefRequests    = "cannot delete account, it is referenced by certificate requests"
	MsgRefCerts       = "cannot delete account, it is referenced by certificates"
)

// Config tunes the service.
type Config struct {
	// Directories overrides built-in providers' directory URLs by name.
	Directories map[string]string
	// MaxRegisterAttempts is how many deliveries of a registration step
	// may fail transiently before the account is marked failed; it should
	// match the queue's maxReceiveCount.
	MaxRegisterAttempts int
	Now                 func() time.Time
	Log                 *slog.Logger
}

// Service is the ACME account service. Safe for concurrent use.
type Service struct {
	st     store.Store
	sealer keys.Sealer
	queue  queue.Sender
	ca     CA
	cfg    Config
	log    *slog.Logger
}

// New returns the service.
func New(st store.Store, sealer keys.Sealer, q queue.Sender, ca CA, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxRegisterAttempts == 0 {
		cfg.MaxRegisterAttempts = 5
	}
	return &Service{st: st, sealer: sealer, queue: q, ca: ca, cfg: cfg, log: cfg.Log}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// accountRecord is the stored account with its sealed secrets.
type accountRecord struct {
	Account
	SealedKey []byte `json:"sealed_key,omitempty"`
	SealedEAB []byte `json:"sealed_eab,omitempty"`
}

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }
func accountKey(userID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("account#%019d", id)}
}
func uniqueKey(userID, providerID int64, email string) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("unique#%d#%s", providerID, email)}
}
func defaultKey(userID, providerID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("default#%d", providerID)}
}

func sealContext(id int64, purpose string) map[string]string {
	return map[string]string{"acme-account": strconv.FormatInt(id, 10), "purpose": purpose}
}

// registerMessage is the body of a KindRegister step.
type registerMessage struct {
	UserID    int64 `json:"user_id"`
	AccountID int64 `json:"account_id"`
}

// Create stores a pending account and queues its registration with the CA.
// Errors: Invalid naming providerName, email, eabKid or eabHmacKey;
// Conflict for a second account with the same provider and email.
func (s *Service) Create(ctx context.Context, userID int64, na NewAccount) (Account, error) {
	if strings.TrimSpace(na.ProviderName) == "" {
		return Account{}, apperr.InvalidField("providerName", "is required")
	}
	p, err := s.ProviderByName(ctx, na.ProviderName)
	if err != nil {
		return Account{}, err
	}
	if p.Status != "active" {
		return Account{}, apperr.InvalidField("providerName", "provider %q is not active", p.Name)
	}
	email, err := identity.NormalizeEmail(na.Email)
	if err != nil {
		return Account{}, err
	}
	if p.RequiresEAB && (na.EABKid == "" || na.EABHMACKey == "") {
		return Account{}, apperr.InvalidField("eabKid", "provider %s requires external account binding: give eabKid and eabHmacKey", p.Name)
	}
	if (na.EABKid == "") != (na.EABHMACKey == "") {
		return Account{}, apperr.InvalidField("eabHmacKey", "give eabKid and eabHmacKey together")
	}
	if na.EABHMACKey != "" {
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(na.EABHMACKey, "=")); err != nil || len(na.EABKid) > 256 {
			return Account{}, apperr.InvalidField("eabHmacKey", "must be the base64url key the CA gave")
		}
	}
	existing, err := s.records(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	if len(existing) >= MaxAccountsPerUser {
		return Account{}, apperr.New(apperr.Conflict, "a user has at most %d ACME accounts", MaxAccountsPerUser)
	}
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "acme_accounts"}, 1, time.Time{})
	if err != nil {
		return Account{}, fmt.Errorf("acmeacct: next account id: %w", err)
	}
	now := s.now()
	rec := accountRecord{Account: Account{ID: id, UserID: userID, ProviderID: p.ID, ProviderName: p.Name, Email: email,
		Status: StatusPending, EABKid: na.EABKid, CreatedAt: now, UpdatedAt: now}}
	if na.EABHMACKey != "" {
		if rec.SealedEAB, err = s.sealer.Seal(ctx, []byte(na.EABHMACKey), sealContext(id, "eab")); err != nil {
			return Account{}, fmt.Errorf("acmeacct: seal EAB key: %w", err)
		}
	}
	it, err := store.JSONItem(accountKey(userID, id), rec)
	if err != nil {
		return Account{}, err
	}
	writes := []store.Write{
		store.PutWrite(it, store.IfAbsent),
		store.PutWrite(store.Item{Key: uniqueKey(userID, p.ID, email), Value: []byte(strconv.FormatInt(id, 10))}, store.IfAbsent),
	}
	if err := s.st.Transact(ctx, writes); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return Account{}, &apperr.Error{Code: apperr.Conflict, Field: "email",
				Message: fmt.Sprintf("an account for %s at %s already exists", email, p.Name)}
		}
		return Account{}, fmt.Errorf("acmeacct: create: %w", err)
	}
	if err := s.queueRegistration(ctx, userID, id); err != nil {
		undo := []store.Write{store.DeleteWrite(writes[0].Item.Key, store.Always), store.DeleteWrite(writes[1].Item.Key, store.Always)}
		if uerr := s.st.Transact(context.WithoutCancel(ctx), undo); uerr != nil {
			s.log.Error("acmeacct: undoing the account failed", "account", id, "err", uerr)
		}
		return Account{}, err
	}
	return rec.Account, nil
}

// load reads one of userID's accounts; another user's is NotFound.
func (s *Service) load(ctx context.Context, userID, id int64) (accountRecord, store.Item, error) {
	var rec accountRecord
	it, err := store.GetJSON(ctx, s.st, accountKey(userID, id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, it, apperr.New(apperr.NotFound, "ACME account %d not found", id)
	}
	return rec, it, err
}

// defaults maps provider id to the user's default account and its item.
func (s *Service) defaults(ctx context.Context, userID int64) (map[int64]store.Item, error) {
	page, err := s.st.Query(ctx, store.Query{Table: Table, PK: userPK(userID), SKPrefix: "default#", Limit: store.MaxQueryLimit})
	if err != nil {
		return nil, fmt.Errorf("acmeacct: read defaults: %w", err)
	}
	out := map[int64]store.Item{}
	for _, it := range page.Items {
		pid, err := strconv.ParseInt(strings.TrimPrefix(it.SK, "default#"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("acmeacct: bad default item %s", it.Key)
		}
		out[pid] = it
	}
	return out, nil
}

func defaultAccount(it store.Item) int64 {
	id, _ := strconv.ParseInt(string(it.Value), 10, 64)
	return id
}

// records reads all of the user's accounts, oldest first.
func (s *Service) records(ctx context.Context, userID int64) ([]accountRecord, error) {
	var out []accountRecord
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: "account#", Limit: store.MaxQueryLimit}
	for {
		page, err := s.st.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("acmeacct: list accounts: %w", err)
		}
		for _, it := range page.Items {
			var rec accountRecord
			if err := store.DecodeJSON(it, &rec); err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return out, nil
		}
	}
}

// Get returns one of userID's accounts.
func (s *Service) Get(ctx context.Context, userID, id int64) (Account, error) {
	rec, _, err := s.load(ctx, userID, id)
	if err != nil {
		return Account{}, err
	}
	defs, err := s.defaults(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	a := rec.Account
	a.IsDefault = defaultAccount(defs[a.ProviderID]) == a.ID
	return a, nil
}

// List returns the user's accounts that match f, oldest first, skipping
// offset and returning at most limit, with the total that match.
func (s *Service) List(ctx context.Context, userID int64, f Filter, offset, limit int) ([]Account, int, error) {
	recs, err := s.records(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	defs, err := s.defaults(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	var match []Account
	needle := strings.ToLower(f.EmailContains)
	for _, r := range recs {
		a := r.Account
		if (f.ProviderID != 0 && a.ProviderID != f.ProviderID) || (f.Status != "" && a.Status != f.Status) ||
			(needle != "" && !strings.Contains(a.Email, needle)) {
			continue
		}
		a.IsDefault = defaultAccount(defs[a.ProviderID]) == a.ID
		match = append(match, a)
	}
	sort.SliceStable(match, func(i, j int) bool { return match[i].ID < match[j].ID })
	total := len(match)
	if offset >= total {
		return []Account{}, total, nil
	}
	return match[offset:min(total, offset+limit)], total, nil
}

// SetDefault makes an active account its provider's default for the user,
// replacing the previous default in the same transaction.
func (s *Service) SetDefault(ctx context.Context, userID, providerID, accountID int64) (Account, error) {
	rec, it, err := s.load(ctx, userID, accountID)
	if err != nil {
		return Account{}, err
	}
	if rec.ProviderID != providerID {
		return Account{}, apperr.InvalidField("providerId", "account %d belongs to provider %d, not %d", accountID, rec.ProviderID, providerID)
	}
	if rec.Status != StatusActive {
		return Account{}, apperr.New(apperr.Conflict, "only an active account can be the default; account %d is %s", accountID, rec.Status)
	}
	err = s.st.Transact(ctx, []store.Write{
		store.CheckWrite(it.Key, store.IfVersion(it.Version)),
		store.PutWrite(store.Item{Key: defaultKey(userID, providerID), Value: []byte(strconv.FormatInt(accountID, 10))}, store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return Account{}, apperr.New(apperr.Conflict, "account %d changed meanwhile; try again", accountID)
	}
	if err != nil {
		return Account{}, err
	}
	a := rec.Account
	a.IsDefault = true
	return a, nil
}

// Enable makes a disabled account active again; an active one stays so.
// It does not make the account default.
func (s *Service) Enable(ctx context.Context, userID, id int64) (Account, error) {
	return s.setStatus(ctx, userID, id, StatusActive)
}

// Disable stops an account from being used; the default cannot be
// disabled. Disabling a disabled account is fine.
func (s *Service) Disable(ctx context.Context, userID, id int64) (Account, error) {
	return s.setStatus(ctx, userID, id, StatusDisabled)
}

func (s *Service) setStatus(ctx context.Context, userID, id int64, to string) (Account, error) {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return Account{}, err
	}
	if rec.Status == to {
		return s.Get(ctx, userID, id)
	}
	if to == StatusActive && rec.Status != StatusDisabled {
		// A failed account is fixed by deleting and creating it again
		// (with the right EAB key); a pending one is being registered.
		return Account{}, apperr.New(apperr.Conflict, "only a disabled account can be enabled; account %d is %s", id, rec.Status)
	}
	defs, err := s.defaults(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	def, hasDefault := defs[rec.ProviderID]
	if to == StatusDisabled && hasDefault && defaultAccount(def) == id {
		return Account{}, apperr.New(apperr.Conflict, MsgDisableDefault)
	}
	rec.Status, rec.UpdatedAt = to, s.now()
	// An account disabled before the CA registered it goes back to
	// registration instead of becoming active without an account.
	reregister := to == StatusActive && rec.AccountURL == ""
	if reregister {
		rec.Status, rec.LastError = StatusPending, ""
	}
	next, err := store.JSONItem(it.Key, rec)
	if err != nil {
		return Account{}, err
	}
	// The default must not move onto this account while it is disabled.
	writes := []store.Write{store.PutWrite(next, store.IfVersion(it.Version)), defaultUnchanged(userID, rec.ProviderID, def, hasDefault)}
	if err := s.st.Transact(ctx, writes); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return Account{}, apperr.New(apperr.Conflict, "account %d changed meanwhile; try again", id)
		}
		return Account{}, err
	}
	if reregister {
		if err := s.queueRegistration(ctx, rec.UserID, rec.ID); err != nil {
			return Account{}, err
		}
	}
	return rec.Account, nil
}

// queueRegistration queues the registration step of an account.
func (s *Service) queueRegistration(ctx context.Context, userID, id int64) error {
	body, _ := json.Marshal(registerMessage{UserID: userID, AccountID: id})
	if _, err := s.queue.Send(ctx, queue.Message{Kind: KindRegister, Body: body}, 0); err != nil {
		s.log.Error("acmeacct: queueing registration failed", "account", id, "err", err)
		return apperr.New(apperr.Unavailable, "could not queue the registration; try again")
	}
	return nil
}

// defaultUnchanged is a transaction check that the provider's default is
// still what was read.
func defaultUnchanged(userID, providerID int64, def store.Item, exists bool) store.Write {
	if !exists {
		return store.CheckWrite(defaultKey(userID, providerID), store.IfAbsent)
	}
	return store.CheckWrite(def.Key, store.IfVersion(def.Version))
}

// Delete removes an account for good: not the default, and not while
// certificates or certificate requests reference it.
func (s *Service) Delete(ctx context.Context, userID, id int64) error {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return err
	}
	defs, err := s.defaults(ctx, userID)
	if err != nil {
		return err
	}
	def, hasDefault := defs[rec.ProviderID]
	if hasDefault && defaultAccount(def) == id {
		return apperr.New(apperr.Conflict, MsgDeleteDefault)
	}
	refs, err := s.references(ctx, userID, id)
	if err != nil {
		return err
	}
	switch {
	case refs.counts[RefRequest] > 0:
		return apperr.New(apperr.Conflict, MsgRefRequests)
	case refs.counts[RefCertificate] > 0:
		return apperr.New(apperr.Conflict, MsgRefCerts)
	}
	writes := append(refs.unchanged, // no reference was counted since they were read
		store.DeleteWrite(it.Key, store.IfVersion(it.Version)),
		store.DeleteWrite(uniqueKey(userID, rec.ProviderID, rec.Email), store.Always),
		defaultUnchanged(userID, rec.ProviderID, def, hasDefault),
	)
	err = s.st.Transact(ctx, writes)
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.Conflict, "account %d changed meanwhile; try again", id)
	}
	if err != nil {
		return err
	}
	// The (zero) reference shards go with it.
	for _, w := range refs.unchanged {
		if w.Cond != store.IfAbsent {
			if err := s.st.Delete(ctx, w.Item.Key, store.Always); err != nil {
				s.log.Warn("acmeacct: deleting a reference count left it behind", "account", id, "err", err)
			}
		}
	}
	return nil
}

// RefKind is what references an account.
type RefKind string

const (
	RefCertificate RefKind = "certificate"
	RefRequest     RefKind = "request"
)

// refShards is how many items an account's reference counts are spread
// over, so that many certificates created at once on one account rarely
// write the same item (each is a versioned read-modify-write). Delete
// checks all of them in its transaction: refShards plus its own three
// writes stay within store.MaxTransactWrites.
const refShards = 16

func refKey(userID, id int64, shard int) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("refs#%019d#%02d", id, shard)}
}

// refCounts is one shard of an account's reference counts.
type refCounts map[RefKind]int

// accountRefs is an account's reference counts as read, with the
// transaction checks that they are unchanged.
type accountRefs struct {
	counts    refCounts
	unchanged []store.Write
}

// references reads every shard of the account's reference counts.
func (s *Service) references(ctx context.Context, userID, id int64) (accountRefs, error) {
	refs := accountRefs{counts: refCounts{}}
	for i := range refShards {
		var shard refCounts
		it, err := store.GetJSON(ctx, s.st, refKey(userID, id, i), &shard)
		if errors.Is(err, store.ErrNotFound) {
			refs.unchanged = append(refs.unchanged, store.CheckWrite(refKey(userID, id, i), store.IfAbsent))
			continue
		}
		if err != nil {
			return refs, fmt.Errorf("acmeacct: read references: %w", err)
		}
		for k, n := range shard {
			refs.counts[k] += n
		}
		refs.unchanged = append(refs.unchanged, store.CheckWrite(it.Key, store.IfVersion(it.Version)))
	}
	return refs, nil
}

// Reference adds delta (+1 or -1) to the account's count of certificates
// or certificate requests that use it; Delete refuses while any remain.
// Referencing needs an account that is not disabled or failed (Conflict)
// and that exists when the count is written (NotFound otherwise, also
// when it is deleted meanwhile). The count is kept in one of refShards
// items picked at random, and a contended one is retried with a short,
// growing, jittered pause, so many certificates created at once on one
// account all get counted.
func (s *Service) Reference(ctx context.Context, userID, id int64, kind RefKind, delta int) error {
	if kind != RefCertificate && kind != RefRequest {
		return fmt.Errorf("acmeacct: unknown reference kind %q", kind)
	}
	rec, _, err := s.load(ctx, userID, id)
	if err != nil {
		return err
	}
	if delta > 0 && (rec.Status == StatusDisabled || rec.Status == StatusFailed) {
		return apperr.New(apperr.Conflict, "ACME account %d is %s and cannot be used", id, rec.Status)
	}
	pause := time.Millisecond
	for range referenceAttempts {
		shard := rand.IntN(refShards)
		if delta < 0 {
			// Take back from a shard that holds some.
			if shard, err = s.shardWith(ctx, userID, id, kind); err != nil {
				return err
			}
			if shard < 0 {
				return nil // nothing counted: stays at zero
			}
		}
		var counts refCounts
		it, err := store.GetJSON(ctx, s.st, refKey(userID, id, shard), &counts)
		cond := store.IfVersion(it.Version)
		if errors.Is(err, store.ErrNotFound) {
			counts, cond = refCounts{}, store.IfAbsent
		} else if err != nil {
			return fmt.Errorf("acmeacct: read references: %w", err)
		}
		if counts[kind]+delta < 0 {
			// Another decrement emptied this shard since shardWith read
			// it: pick again rather than lose the decrement.
			continue
		}
		counts[kind] += delta
		next, err := store.JSONItem(refKey(userID, id, shard), counts)
		if err != nil {
			return err
		}
		err = s.st.Transact(ctx, []store.Write{store.CheckWrite(accountKey(userID, id), store.IfExists), store.PutWrite(next, cond)})
		var txErr *store.TxError
		switch {
		case errors.As(err, &txErr) && txErr.Index == 0:
			return apperr.New(apperr.NotFound, "ACME account %d not found", id)
		case !errors.Is(err, store.ErrConditionFailed):
			return err
		}
		t := time.NewTimer(pause/2 + time.Duration(rand.Int64N(int64(pause))))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
	return apperr.New(apperr.Conflict, "ACME account %d is being changed concurrently; try again", id)
}

// shardWith returns a shard holding a count of kind, or -1 if none does.
func (s *Service) shardWith(ctx context.Context, userID, id int64, kind RefKind) (int, error) {
	start := rand.IntN(refShards)
	for j := range refShards {
		i := (start + j) % refShards
		var counts refCounts
		_, err := store.GetJSON(ctx, s.st, refKey(userID, id, i), &counts)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("acmeacct: read references: %w", err)
		}
		if counts[kind] > 0 {
			return i, nil
		}
	}
	return -1, nil
}

// referenceAttempts bounds Reference's retries of a contended count.
const referenceAttempts = 30
