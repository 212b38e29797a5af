package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// DefaultMaxPerUser bounds how many certificates one user keeps unless
// Config says otherwise.
const DefaultMaxPerUser = 5000

// Config tunes the service.
type Config struct {
	// MaxPerUser bounds how many certificates one user keeps (counted
	// atomically per user). 0 means DefaultMaxPerUser.
	MaxPerUser int
	// Providers is the user's DNS providers, which dns-01-provider
	// certificates name; nil makes that method unavailable.
	Providers DNSProviders
	// DelegationZone is certfleet's own DNS zone for dns-01-delegation
	// (CERTFLEET_DELEGATION_ZONE); "" makes that method unavailable for
	// new certificates (existing ones keep it).
	DelegationZone string
	// OnKeyPolicyChange, when set, is called after Update changed a
	// certificate's key distribution (policy or server_decrypt_export),
	// so that the devices holding it are told. Its error is logged: the
	// change stands.
	OnKeyPolicyChange func(ctx context.Context, userID, certID int64) error
	Now               func() time.Time
	Log               *slog.Logger
}

// Service is the certificate record service. Safe for concurrent use.
type Service struct {
	st    store.Store
	accts Accounts
	cfg   Config
	log   *slog.Logger
}

// New returns the service over the store and the ACME account service;
// cfg gives it the DNS providers and the delegation zone.
func New(st store.Store, accts Accounts, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxPerUser == 0 {
		cfg.MaxPerUser = DefaultMaxPerUser
	}
	return &Service{st: st, accts: accts, cfg: cfg, log: cfg.Log}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// record is the stored certificate. Sealed secrets (the private key) will
// sit here, beside the Certificate, never in it.
type record struct {
	Certificate
	// CheckAt is when the renewal scan looks at the certificate next (its
	// renewal index key): RenewAt, or earlier to ask the CA's ARI window
	// again. Zero means RenewAt.
	CheckAt time.Time `json:"check_at,omitzero"`
}

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }
func certSK(id int64) string     { return fmt.Sprintf("cert#%019d", id) }
func certKey(userID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: certSK(id)}
}
func accountIndexPK(userID, acctID int64) string { return fmt.Sprintf("acct#%d#%d", userID, acctID) }

// renewalPK is the one partition of IndexByRenewal.
const renewalPK = "renew"

// item encodes rec with its index entries.
func item(rec record) (store.Item, error) {
	it, err := store.JSONItem(certKey(rec.UserID, rec.ID), rec)
	if err != nil {
		return store.Item{}, err
	}
	it.Indexes = map[string]store.IndexKey{
		IndexByAccount: {PK: accountIndexPK(rec.UserID, rec.AcctID), SK: certSK(rec.ID)},
	}
	if !rec.RenewAt.IsZero() {
		at := rec.RenewAt
		if !rec.CheckAt.IsZero() && rec.CheckAt.Before(at) {
			at = rec.CheckAt
		}
		it.Indexes[IndexByRenewal] = store.IndexKey{PK: renewalPK,
			SK: fmt.Sprintf("%s#%019d", at.UTC().Format("20060102T150405Z"), rec.ID)}
	}
	return it, nil
}

// idOf returns the certificate id of a stored item.
func idOf(it store.Item) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(it.SK, "cert#"), 10, 64)
	if err != nil || !strings.HasPrefix(it.SK, "cert#") {
		return 0, fmt.Errorf("certs: unexpected item %s", it.Key)
	}
	return id, nil
}

// Create validates and stores a new certificate, status "new", and counts
// it on its ACME account. Errors: Invalid naming the field (a name, see
// NormalizeNames; key_algorithm, key_size, policy, challenge_type,
// validation.method, server_decrypt_export; acct_id when the account is
// not one of the user's or is disabled or failed; validation.dns_provider_id,
// see checkValidation); Conflict when the user has MaxPerUser
// certificates.
func (s *Service) Create(ctx context.Context, userID int64, nc NewCertificate) (Certificate, error) {
	c := Certificate{UserID: userID, AcctID: nc.AcctID, ServerDecryptExport: nc.ServerDecryptExport, Status: StatusNew}
	var err error
	if c.KeyAlgorithm, c.KeySize, err = resolveKey(nc.KeyAlgorithm, nc.KeySize); err != nil {
		return Certificate{}, err
	}
	if c.Policy, err = resolvePolicy(nc.Policy); err != nil {
		return Certificate{}, err
	}
	if c.ChallengeType, c.Validation.Method, err = resolveValidation(nc.ChallengeType, nc.ValidationMethod); err != nil {
		return Certificate{}, err
	}
	if c.DomainName, c.SANs, err = NormalizeNames(nc.DomainName, nc.SANs, c.Validation.Method); err != nil {
		return Certificate{}, err
	}
	if err := checkExport(c.Policy, c.ServerDecryptExport, "server_decrypt_export"); err != nil {
		return Certificate{}, err
	}
	c.Validation.DNSProviderID = nc.DNSProviderID
	if err := s.checkValidation(ctx, userID, Validation{}, c.Validation); err != nil {
		return Certificate{}, err
	}
	if c.AcctID <= 0 {
		return Certificate{}, apperr.InvalidField("acct_id", "is required: the id of one of your ACME accounts")
	}
	// The user's count and the account's are raised before the
	// certificate exists: a crash in between leaves a count high (one
	// certificate less room, or an account that cannot be deleted), never
	// a certificate on an account that can be.
	n, err := s.st.Increment(ctx, countKey(userID), 1, time.Time{})
	if err != nil {
		return Certificate{}, fmt.Errorf("certs: count the user's certificates: %w", err)
	}
	if n > int64(s.cfg.MaxPerUser) {
		s.uncount(ctx, userID)
		return Certificate{}, apperr.New(apperr.Conflict, "a user has at most %d certificates", s.cfg.MaxPerUser)
	}
	if err := s.useAccount(ctx, userID, c.AcctID); err != nil {
		s.uncount(ctx, userID)
		return Certificate{}, err
	}
	c.ID, err = s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "certificates"}, 1, time.Time{})
	if err != nil {
		s.uncount(ctx, userID)
		s.releaseAccount(ctx, userID, c.AcctID)
		return Certificate{}, fmt.Errorf("certs: next certificate id: %w", err)
	}
	c.CreatedAt = s.now()
	c.UpdatedAt = c.CreatedAt
	it, err := item(record{Certificate: c})
	if err == nil {
		_, err = s.st.Put(ctx, it, store.IfAbsent)
	}
	if err != nil {
		s.uncount(ctx, userID)
		s.releaseAccount(ctx, userID, c.AcctID)
		return Certificate{}, fmt.Errorf("certs: create: %w", err)
	}
	return c, nil
}

// countKey is the counter of a user's certificates (beside them, outside
// the "cert#" sort keys that listings read).
func countKey(userID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: "count"}
}

// uncount lowers the user's certificate count; a failure only leaves it
// high, so it is logged, not returned.
func (s *Service) uncount(ctx context.Context, userID int64) {
	if _, err := s.st.Increment(context.WithoutCancel(ctx), countKey(userID), -1, time.Time{}); err != nil {
		s.log.Error("certs: lowering the user's certificate count failed; it stays high", "user", userID, "err", err)
	}
}

// useAccount checks that acctID is one of the user's accounts that is not
// disabled or failed, and counts a certificate on it.
func (s *Service) useAccount(ctx context.Context, userID, acctID int64) error {
	a, err := s.accts.Get(ctx, userID, acctID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return apperr.InvalidField("acct_id", "ACME account %d is not one of your accounts", acctID)
	}
	if err != nil {
		return err
	}
	if a.Status == acmeacct.StatusDisabled || a.Status == acmeacct.StatusFailed {
		return apperr.InvalidField("acct_id", "ACME account %d is %s and cannot be used; enable it or choose another", acctID, a.Status)
	}
	err = s.reference(ctx, userID, acctID, 1)
	switch code := apperr.CodeOf(err); code {
	case "":
		return nil
	case apperr.NotFound:
		return apperr.InvalidField("acct_id", "ACME account %d is not one of your accounts", acctID)
	case apperr.Conflict:
		return &apperr.Error{Code: code, Field: "acct_id", Message: "acct_id: " + apperr.MessageOf(err)}
	default:
		return err
	}
}

// releaseAccount uncounts a certificate from its account. A failure only
// leaves the count high (the account cannot be deleted), so it is logged,
// not returned.
func (s *Service) releaseAccount(ctx context.Context, userID, acctID int64) {
	if err := s.reference(context.WithoutCancel(ctx), userID, acctID, -1); err != nil {
		s.log.Error("certs: uncounting a certificate from its ACME account failed; the account's count stays high",
			"user", userID, "account", acctID, "err", err)
	}
}

// reference adds delta to the account's count of certificates.
func (s *Service) reference(ctx context.Context, userID, acctID int64, delta int) error {
	return s.accts.Reference(ctx, userID, acctID, acmeacct.RefCertificate, delta)
}

// load reads one of the user's certificates; another user's is NotFound.
func (s *Service) load(ctx context.Context, userID, id int64) (record, store.Item, error) {
	var rec record
	it, err := store.GetJSON(ctx, s.st, certKey(userID, id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, it, apperr.New(apperr.NotFound, "certificate %d not found", id)
	}
	return rec, it, err
}

// Get returns one of the user's certificates. Errors: NotFound.
func (s *Service) Get(ctx context.Context, userID, id int64) (Certificate, error) {
	rec, _, err := s.load(ctx, userID, id)
	return rec.Certificate, err
}

func (s *Service) userQuery(userID int64) store.Query {
	return store.Query{Table: Table, PK: userPK(userID), SKPrefix: "cert#", Limit: store.MaxQueryLimit}
}

// List returns the user's certificates that f allows, oldest first,
// skipping offset and returning at most limit (0: 100), with the total
// that f allows.
func (s *Service) List(ctx context.Context, userID int64, f Filter, offset, limit int) ([]Certificate, int, error) {
	return s.page(ctx, s.userQuery(userID), f, max(offset, 0), pageLimit(limit))
}

// ListByAccount is List for the certificates of one of the user's ACME
// accounts. Errors: NotFound for an account that is not the user's. The
// index behind it may lag a write by a moment (see store.Item.Indexes).
func (s *Service) ListByAccount(ctx context.Context, userID, acctID int64, f Filter, offset, limit int) ([]Certificate, int, error) {
	if _, err := s.accts.Get(ctx, userID, acctID); err != nil {
		return nil, 0, err
	}
	q := store.Query{Table: Table, Index: IndexByAccount, PK: accountIndexPK(userID, acctID), Limit: store.MaxQueryLimit}
	return s.page(ctx, q, f, max(offset, 0), pageLimit(limit))
}

func pageLimit(limit int) int {
	if limit <= 0 {
		return store.DefaultQueryLimit
	}
	return limit
}

// page reads every item of q, counts those f allows and decodes those
// from offset on, at most limit.
func (s *Service) page(ctx context.Context, q store.Query, f Filter, offset, limit int) ([]Certificate, int, error) {
	out, total := []Certificate{}, 0
	for {
		page, err := s.st.Query(ctx, q)
		if err != nil {
			return nil, 0, fmt.Errorf("certs: list: %w", err)
		}
		for _, it := range page.Items {
			id, err := idOf(it)
			if err != nil {
				return nil, 0, err
			}
			if f.Allow != nil && !f.Allow(id) {
				continue
			}
			if total >= offset && len(out) < limit {
				var rec record
				if err := store.DecodeJSON(it, &rec); err != nil {
					return nil, 0, err
				}
				out = append(out, rec.Certificate)
			}
			total++
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return out, total, nil
		}
	}
}

// Update applies ch. Names, key and validation change only while the
// certificate is new (Conflict naming the field after); a new ACME
// account must be usable, and the certificate's count moves to it.
// Nothing changed is not an error and writes nothing. Errors: NotFound;
// Invalid as for Create; Conflict as said, or when the certificate
// changed meanwhile.
func (s *Service) Update(ctx context.Context, userID, id int64, ch Changes) (Certificate, error) {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return Certificate{}, err
	}
	cur := rec.Certificate
	next, err := apply(cur, ch)
	if err != nil {
		return Certificate{}, err
	}
	if cur.Status != StatusNew {
		if field := orderChange(cur, next); field != "" {
			return Certificate{}, &apperr.Error{Code: apperr.Conflict, Field: field, Message: fmt.Sprintf(
				"%s: certificate %d has been issued, so its names, key and validation are fixed; create another certificate instead", field, id)}
		}
	}
	if err := s.checkValidation(ctx, userID, cur.Validation, next.Validation); err != nil {
		return Certificate{}, err
	}
	if same(cur, next) {
		return cur, nil
	}
	moved := next.AcctID != cur.AcctID
	if moved {
		if err := s.useAccount(ctx, userID, next.AcctID); err != nil {
			return Certificate{}, err
		}
	}
	next.UpdatedAt = s.now()
	rec.Certificate = next
	nit, err := item(rec)
	if err == nil {
		_, err = s.st.Put(ctx, nit, store.IfVersion(it.Version))
	}
	if err != nil {
		if moved {
			s.releaseAccount(ctx, userID, next.AcctID)
		}
		if errors.Is(err, store.ErrConditionFailed) {
			return Certificate{}, apperr.New(apperr.Conflict, "certificate %d changed meanwhile; try again", id)
		}
		return Certificate{}, fmt.Errorf("certs: update: %w", err)
	}
	if moved {
		s.releaseAccount(ctx, userID, cur.AcctID)
	}
	if s.cfg.OnKeyPolicyChange != nil && (next.Policy != cur.Policy || next.ServerDecryptExport != cur.ServerDecryptExport) {
		if err := s.cfg.OnKeyPolicyChange(context.WithoutCancel(ctx), userID, id); err != nil {
			s.log.Error("certs: telling devices of a key policy change failed", "user", userID, "certificate", id, "err", err)
		}
	}
	return next, nil
}

// apply returns cur with ch applied and validated.
func apply(cur Certificate, ch Changes) (Certificate, error) {
	next := cur
	next.SANs = slices.Clone(cur.SANs)
	var err error

	alg, size := cur.KeyAlgorithm, cur.KeySize
	if ch.KeyAlgorithm != nil {
		if a := strings.ToUpper(strings.TrimSpace(*ch.KeyAlgorithm)); a != alg {
			alg, size = a, 0
		}
	}
	if ch.KeySize != nil {
		size = *ch.KeySize
	}
	if next.KeyAlgorithm, next.KeySize, err = resolveKey(alg, size); err != nil {
		return cur, err
	}

	switch {
	case ch.ChallengeType != nil && ch.ValidationMethod != nil:
		next.ChallengeType, next.Validation.Method, err = resolveValidation(*ch.ChallengeType, *ch.ValidationMethod)
	case ch.ChallengeType != nil:
		method := ""
		if methodChallenge[cur.Validation.Method] == normalizeChallenge(*ch.ChallengeType) {
			method = cur.Validation.Method
		}
		next.ChallengeType, next.Validation.Method, err = resolveValidation(*ch.ChallengeType, method)
	case ch.ValidationMethod != nil:
		next.ChallengeType, next.Validation.Method, err = resolveValidation("", *ch.ValidationMethod)
	}
	if err != nil {
		return cur, err
	}
	switch {
	case ch.DNSProviderID != nil:
		next.Validation.DNSProviderID = *ch.DNSProviderID
	case next.Validation.Method != MethodDNS01Provider:
		// Another method drops the provider instead of refusing it.
		next.Validation.DNSProviderID = 0
	}

	domain, sans := cur.DomainName, cur.SANs
	switch {
	case ch.DomainName != nil && ch.SANs != nil:
		domain, sans = *ch.DomainName, *ch.SANs
	case ch.DomainName != nil:
		// The new primary name replaces the old one.
		domain = *ch.DomainName
		sans = slices.DeleteFunc(slices.Clone(cur.SANs), func(n string) bool { return n == cur.DomainName })
	case ch.SANs != nil:
		sans, domain = *ch.SANs, ""
		for _, raw := range sans {
			if n, _, err := normalizeName(raw); err == nil && n == cur.DomainName {
				domain = cur.DomainName
			}
		}
	}
	if next.DomainName, next.SANs, err = NormalizeNames(domain, sans, next.Validation.Method); err != nil {
		return cur, err
	}

	if ch.Policy != nil {
		if next.Policy, err = resolvePolicy(*ch.Policy); err != nil {
			return cur, err
		}
	}
	field := "policy"
	if ch.ServerDecryptExport != nil {
		next.ServerDecryptExport, field = *ch.ServerDecryptExport, "server_decrypt_export"
	}
	if err := checkExport(next.Policy, next.ServerDecryptExport, field); err != nil {
		return cur, err
	}
	if ch.AcctID != nil {
		if *ch.AcctID <= 0 {
			return cur, apperr.InvalidField("acct_id", "must be the id of one of your ACME accounts")
		}
		next.AcctID = *ch.AcctID
	}
	return next, nil
}

// orderChange names the first field that shapes the next order and
// differs between a and b, or "".
func orderChange(a, b Certificate) string {
	switch {
	case a.DomainName != b.DomainName:
		return "domain_name"
	case !slices.Equal(a.SANs, b.SANs):
		return "sans"
	case a.KeyAlgorithm != b.KeyAlgorithm:
		return "key_algorithm"
	case a.KeySize != b.KeySize:
		return "key_size"
	case a.ChallengeType != b.ChallengeType:
		return "challenge_type"
	case a.Validation.Method != b.Validation.Method:
		return "validation.method"
	case a.Validation != b.Validation:
		return "validation.dns_provider_id"
	}
	return ""
}

func same(a, b Certificate) bool {
	return orderChange(a, b) == "" && a.AcctID == b.AcctID && a.Policy == b.Policy &&
		a.ServerDecryptExport == b.ServerDecryptExport
}

// Delete removes one of the user's certificates for good and uncounts it
// from its ACME account. Errors: NotFound; Conflict when it changed
// meanwhile.
func (s *Service) Delete(ctx context.Context, userID, id int64) error {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return err
	}
	err = s.st.Delete(ctx, it.Key, store.IfVersion(it.Version))
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.Conflict, "certificate %d changed meanwhile; try again", id)
	}
	if err != nil {
		return fmt.Errorf("certs: delete: %w", err)
	}
	s.uncount(ctx, userID)
	s.releaseAccount(ctx, userID, rec.AcctID)
	return nil
}

// resolveKey applies the key defaults and checks the pair.
func resolveKey(alg string, size int) (string, int, error) {
	alg = strings.ToUpper(strings.TrimSpace(alg))
	if alg == "" {
		alg = KeyECDSA
	}
	sizes, ok := KeySizes[alg]
	if !ok {
		return "", 0, apperr.InvalidField("key_algorithm", "must be %s or %s, not %q", KeyECDSA, KeyRSA, alg)
	}
	if size == 0 {
		size = sizes[0]
	}
	if !slices.Contains(sizes, size) {
		return "", 0, apperr.InvalidField("key_size", "%s keys are %s bits, not %d", alg, joinInts(sizes), size)
	}
	return alg, size, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

func resolvePolicy(p string) (string, error) {
	p = strings.ToUpper(strings.TrimSpace(p))
	if p == "" {
		return PolicyHybrid, nil
	}
	if !slices.Contains(Policies, p) {
		return "", apperr.InvalidField("policy", "must be one of %s, not %q", strings.Join(Policies, ", "), p)
	}
	return p, nil
}

func normalizeChallenge(c string) string { return strings.ToLower(strings.TrimSpace(c)) }

// resolveValidation applies the defaults to a challenge type and a
// validation method, either of which may be empty, and checks that they
// agree.
func resolveValidation(challenge, method string) (string, string, error) {
	challenge, method = normalizeChallenge(challenge), strings.ToLower(strings.TrimSpace(method))
	if challenge != "" && !slices.Contains(ChallengeTypes, challenge) {
		return "", "", apperr.InvalidField("challenge_type", "must be one of %s, not %q", strings.Join(ChallengeTypes, ", "), challenge)
	}
	if method != "" {
		of, ok := methodChallenge[method]
		if !ok {
			return "", "", apperr.InvalidField("validation.method", "must be one of %s, %s, %s or %s, not %q",
				MethodHTTP01, MethodDNS01Provider, MethodDNS01Delegation, MethodTLSALPN01, method)
		}
		if challenge != "" && challenge != of {
			return "", "", apperr.InvalidField("validation.method", "%q answers %s challenges, but challenge_type is %s", method, of, challenge)
		}
		return of, method, nil
	}
	if challenge == "" {
		challenge = ChallengeHTTP01
	}
	return challenge, defaultMethod[challenge], nil
}

// DelegationZone is the server's dns-01-delegation zone ("" when the
// method is off).
func (s *Service) DelegationZone() string { return s.cfg.DelegationZone }

// DelegationCNAME is a DNS record the owner of a dns-01-delegation
// certificate must add: Name is a CNAME to Target.
type DelegationCNAME struct {
	Name   string `json:"name"`
	Target string `json:"cname"`
}

// DelegationCNAMEs returns the CNAMEs a dns-01-delegation certificate
// needs, in the order of its names: "_acme-challenge.<domain>" to
// DelegationTarget, once per distinct domain (a wildcard shares its
// apex's). Nil for other methods, or when the server has no zone.
func (s *Service) DelegationCNAMEs(c Certificate) []DelegationCNAME {
	if c.Validation.Method != MethodDNS01Delegation || s.cfg.DelegationZone == "" {
		return nil
	}
	var out []DelegationCNAME
	seen := map[string]bool{}
	for _, n := range c.SANs {
		domain := strings.TrimPrefix(n, "*.")
		if seen[domain] {
			continue
		}
		seen[domain] = true
		out = append(out, DelegationCNAME{Name: "_acme-challenge." + domain, Target: DelegationTarget(s.cfg.DelegationZone, c.UserID, domain)})
	}
	return out
}

// checkValidation checks a certificate's validation settings next,
// changed from cur (the zero Validation for a new certificate):
// dns-01-provider needs the id of one of the user's DNS providers (checked
// when it changes, so a certificate whose provider was deleted can still
// be edited otherwise), other methods take none, and dns-01-delegation is
// chosen only while the server has a delegation zone. Errors: Invalid
// naming validation.dns_provider_id or validation.method.
func (s *Service) checkValidation(ctx context.Context, userID int64, cur, next Validation) error {
	const field = "validation.dns_provider_id"
	switch next.Method {
	case MethodDNS01Provider:
		if next.DNSProviderID <= 0 {
			return apperr.InvalidField(field, "is required with %s: the id of one of your DNS providers", MethodDNS01Provider)
		}
		if next == cur {
			return nil
		}
		if s.cfg.Providers == nil {
			return apperr.InvalidField("validation.method", "%s is not available on this server", MethodDNS01Provider)
		}
		err := s.cfg.Providers.Exists(ctx, userID, next.DNSProviderID)
		if apperr.CodeOf(err) == apperr.NotFound {
			return apperr.InvalidField(field, "DNS provider %d is not one of your DNS providers", next.DNSProviderID)
		}
		return err
	case MethodDNS01Delegation:
		if cur.Method != MethodDNS01Delegation && s.cfg.DelegationZone == "" {
			return apperr.InvalidField("validation.method",
				"%s is not enabled on this server: CERTFLEET_DELEGATION_ZONE is not set", MethodDNS01Delegation)
		}
	}
	if next.DNSProviderID != 0 {
		return apperr.InvalidField(field, "is only for %s, not %s", MethodDNS01Provider, next.Method)
	}
	return nil
}

// checkExport refuses server-decrypted export under DEVICE_REQUIRED,
// naming field.
func checkExport(policy string, export bool, field string) error {
	if policy == PolicyDeviceRequired && export {
		return apperr.InvalidField(field, "policy %s never allows server-decrypted export; set server_decrypt_export to false or choose %s or %s",
			PolicyDeviceRequired, PolicyHybrid, PolicyMasterOnly)
	}
	return nil
}

// RecordIssued marks a certificate issued by the issue issueID, with its
// expiry, planned renewal and next renewal check (which put it in the
// renewal index; a zero checkAt means renewAt). It is idempotent.
func (s *Service) RecordIssued(ctx context.Context, userID, id, issueID int64, notAfter, renewAt, checkAt time.Time) error {
	return s.record(ctx, userID, id, func(rec *record) {
		rec.Status, rec.IssueID, rec.NotAfter = StatusIssued, issueID, notAfter.UTC()
		rec.RenewAt, rec.CheckAt = renewAt.UTC(), checkAt.UTC()
	})
}

// PlanRenewal records a certificate's planned renewal and next renewal
// check. A revoked certificate stays out of the renewal index. Errors:
// NotFound.
func (s *Service) PlanRenewal(ctx context.Context, userID, id int64, renewAt, checkAt time.Time) error {
	return s.record(ctx, userID, id, func(rec *record) {
		if rec.Status == StatusIssued {
			rec.RenewAt, rec.CheckAt = renewAt.UTC(), checkAt.UTC()
		}
	})
}

// Due is a certificate whose renewal time has come.
type Due struct {
	UserID, CertID int64
	RenewAt        time.Time
}

// Due lists, earliest first, at most limit (0: 100) certificates whose
// renewal check (see PlanRenewal) is at or before now, from the renewal
// index (which may lag a write by a moment).
func (s *Service) Due(ctx context.Context, now time.Time, limit int) ([]Due, error) {
	q := store.Query{Table: Table, Index: IndexByRenewal, PK: renewalPK,
		SKTo: now.UTC().Format("20060102T150405Z") + "#~", Limit: pageLimit(limit)}
	page, err := s.st.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("certs: due for renewal: %w", err)
	}
	return store.DecodeEach(page.Items, func(r record) Due {
		return Due{UserID: r.UserID, CertID: r.ID, RenewAt: r.RenewAt}
	})
}

// RecordRevoked marks a certificate revoked and takes it out of the
// renewal index. It is idempotent.
func (s *Service) RecordRevoked(ctx context.Context, userID, id int64) error {
	return s.record(ctx, userID, id, func(rec *record) {
		rec.Status, rec.RenewAt, rec.CheckAt = StatusRevoked, time.Time{}, time.Time{}
	})
}

// record applies change to the stored certificate, retrying once when the
// record changed meanwhile.
func (s *Service) record(ctx context.Context, userID, id int64, change func(*record)) error {
	for attempt := 0; ; attempt++ {
		rec, it, err := s.load(ctx, userID, id)
		if err != nil {
			return err
		}
		change(&rec)
		rec.UpdatedAt = s.now()
		next, err := item(rec)
		if err != nil {
			return err
		}
		_, err = s.st.Put(ctx, next, store.IfVersion(it.Version))
		if !errors.Is(err, store.ErrConditionFailed) || attempt == 1 {
			return err
		}
	}
}
