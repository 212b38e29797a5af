package dnsprov

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/store"
)

// Config tunes the service.
type Config struct {
	Now func() time.Time
	Log *slog.Logger
}

// Service is the DNS provider credential service. Safe for concurrent use.
type Service struct {
	st     store.Store
	sealer keys.Sealer
	cfg    Config
	log    *slog.Logger
}

// New returns the service over the store and the sealer.
func New(st store.Store, sealer keys.Sealer, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{st: st, sealer: sealer, cfg: cfg, log: cfg.Log}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// record is the stored provider with its sealed settings.
type record struct {
	Provider
	// Sealed is the settings as JSON, sealed under sealContext.
	Sealed []byte `json:"sealed_settings"`
}

const skPrefix = "dnsprov#"

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }
func providerKey(userID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("%s%019d", skPrefix, id)}
}

// countKey counts a user's providers; it sorts outside the "dnsprov#"
// prefix that listings read.
func countKey(userID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: "dnsprov-count"}
}

func sealContext(userID, id int64) map[string]string {
	return map[string]string{"user": strconv.FormatInt(userID, 10), "dns-provider": strconv.FormatInt(id, 10)}
}

// Create validates and stores a user's DNS provider credentials. Errors:
// Invalid naming the field ("name", "provider", "settings" or
// "settings.<NAME>"); Conflict when the user has MaxPerUser providers.
func (s *Service) Create(ctx context.Context, userID int64, np NewProvider) (Provider, error) {
	name, err := validName(np.Name)
	if err != nil {
		return Provider{}, err
	}
	code := strings.ToLower(strings.TrimSpace(np.Provider))
	e, err := catalogEntry(code)
	if err != nil {
		return Provider{}, err
	}
	if err := validSettings(e, np.Settings); err != nil {
		return Provider{}, err
	}
	n, err := s.st.Increment(ctx, countKey(userID), 1, time.Time{})
	if err != nil {
		return Provider{}, fmt.Errorf("dnsprov: count the user's providers: %w", err)
	}
	if n > MaxPerUser {
		s.uncount(ctx, userID)
		return Provider{}, apperr.New(apperr.Conflict, "a user has at most %d DNS providers", MaxPerUser)
	}
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "dnsproviders"}, 1, time.Time{})
	if err != nil {
		s.uncount(ctx, userID)
		return Provider{}, fmt.Errorf("dnsprov: next provider id: %w", err)
	}
	now := s.now()
	rec := record{Provider: Provider{ID: id, UserID: userID, Name: name, Provider: code, SettingKeys: keysOf(np.Settings),
		CreatedAt: now, UpdatedAt: now}}
	if rec.Sealed, err = s.seal(ctx, userID, id, np.Settings); err == nil {
		var it store.Item
		if it, err = store.JSONItem(providerKey(userID, id), rec); err == nil {
			_, err = s.st.Put(ctx, it, store.IfAbsent)
		}
	}
	if err != nil {
		s.uncount(ctx, userID)
		return Provider{}, fmt.Errorf("dnsprov: create: %w", err)
	}
	return rec.Provider, nil
}

// uncount lowers the user's provider count; a failure only leaves it
// high, so it is logged, not returned.
func (s *Service) uncount(ctx context.Context, userID int64) {
	if _, err := s.st.Increment(context.WithoutCancel(ctx), countKey(userID), -1, time.Time{}); err != nil {
		s.log.Error("dnsprov: lowering the user's DNS provider count failed; it stays high", "user", userID, "err", err)
	}
}

func (s *Service) seal(ctx context.Context, userID, id int64, settings map[string]string) ([]byte, error) {
	plain, err := json.Marshal(settings)
	if err != nil {
		return nil, err
	}
	sealed, err := s.sealer.Seal(ctx, plain, sealContext(userID, id))
	if err != nil {
		return nil, fmt.Errorf("dnsprov: seal settings: %w", err)
	}
	return sealed, nil
}

// load reads one of the user's providers; another user's is NotFound.
func (s *Service) load(ctx context.Context, userID, id int64) (record, store.Item, error) {
	var rec record
	it, err := store.GetJSON(ctx, s.st, providerKey(userID, id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, it, apperr.New(apperr.NotFound, "DNS provider %d not found", id)
	}
	if err != nil {
		return rec, it, fmt.Errorf("dnsprov: read provider %d: %w", id, err)
	}
	return rec, it, nil
}

// Get returns one of the user's providers. Errors: NotFound.
func (s *Service) Get(ctx context.Context, userID, id int64) (Provider, error) {
	rec, _, err := s.load(ctx, userID, id)
	return rec.Provider, err
}

// Exists returns nil when id is one of the user's providers. Errors:
// NotFound for another user's or a missing one.
func (s *Service) Exists(ctx context.Context, userID, id int64) error {
	_, _, err := s.load(ctx, userID, id)
	return err
}

// List returns the user's providers that f allows, oldest first, skipping
// offset and returning at most limit (0: 100), with the total that f
// allows.
func (s *Service) List(ctx context.Context, userID int64, f Filter, offset, limit int) ([]Provider, int, error) {
	if limit <= 0 {
		limit = store.DefaultQueryLimit
	}
	offset = max(offset, 0)
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: skPrefix, Limit: store.MaxQueryLimit}
	var keep func(record) bool
	if f.Allow != nil {
		keep = func(rec record) bool { return f.Allow(rec.ID) }
	}
	out, total, err := store.PageJSON(ctx, s.st, q, keep, func(rec record) Provider { return rec.Provider }, offset, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("dnsprov: list: %w", err)
	}
	return out, total, nil
}

// Update renames a provider and/or replaces all its settings, validated
// as for Create against its provider code. Errors: NotFound; Invalid as
// for Create; Conflict when it changed meanwhile.
func (s *Service) Update(ctx context.Context, userID, id int64, ch Changes) (Provider, error) {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return Provider{}, err
	}
	if ch.Name != nil {
		if rec.Name, err = validName(*ch.Name); err != nil {
			return Provider{}, err
		}
	}
	if ch.Settings != nil {
		e, err := catalogEntry(rec.Provider.Provider)
		if err != nil {
			return Provider{}, err
		}
		if err := validSettings(e, ch.Settings); err != nil {
			return Provider{}, err
		}
		if rec.Sealed, err = s.seal(ctx, userID, id, ch.Settings); err != nil {
			return Provider{}, err
		}
		rec.SettingKeys = keysOf(ch.Settings)
	}
	rec.UpdatedAt = s.now()
	next, err := store.JSONItem(it.Key, rec)
	if err == nil {
		_, err = s.st.Put(ctx, next, store.IfVersion(it.Version))
	}
	if errors.Is(err, store.ErrConditionFailed) {
		return Provider{}, apperr.New(apperr.Conflict, "DNS provider %d changed meanwhile; try again", id)
	}
	if err != nil {
		return Provider{}, fmt.Errorf("dnsprov: update: %w", err)
	}
	return rec.Provider, nil
}

// Delete removes one of the user's providers for good. Certificates that
// name it are not changed: their issues fail until they name another.
// Errors: NotFound; Conflict when it changed meanwhile.
func (s *Service) Delete(ctx context.Context, userID, id int64) error {
	_, it, err := s.load(ctx, userID, id)
	if err != nil {
		return err
	}
	err = s.st.Delete(ctx, it.Key, store.IfVersion(it.Version))
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.Conflict, "DNS provider %d changed meanwhile; try again", id)
	}
	if err != nil {
		return fmt.Errorf("dnsprov: delete: %w", err)
	}
	s.uncount(ctx, userID)
	return nil
}

// Open returns the lego provider code and the decrypted settings of one
// of the user's providers, for the issuance worker. Errors: an apperr
// NotFound for another user's or a missing (e.g. deleted) provider, whose
// message says so; others are transient.
func (s *Service) Open(ctx context.Context, userID, providerID int64) (string, map[string]string, error) {
	rec, _, err := s.load(ctx, userID, providerID)
	if apperr.CodeOf(err) == apperr.NotFound {
		return "", nil, apperr.New(apperr.NotFound,
			"DNS provider %d not found: it was deleted or is not yours; a certificate naming it cannot be issued "+
				"(give it another DNS provider before its first issue, or create a new certificate)", providerID)
	}
	if err != nil {
		return "", nil, err
	}
	plain, err := s.sealer.Open(ctx, rec.Sealed, sealContext(userID, providerID))
	if err != nil {
		return "", nil, fmt.Errorf("dnsprov: open the settings of provider %d: %w", providerID, err)
	}
	settings := map[string]string{}
	if err := json.Unmarshal(plain, &settings); err != nil {
		return "", nil, fmt.Errorf("dnsprov: settings of provider %d: %w", providerID, err)
	}
	return rec.Provider.Provider, settings, nil
}

func keysOf(settings map[string]string) []string {
	ks := make([]string, 0, len(settings))
	for k := range settings {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// catalogEntry finds a usable catalog provider, or says why not (Invalid
// naming "provider").
func catalogEntry(code string) (*entry, error) {
	if code == "" {
		return nil, apperr.InvalidField("provider", "is required: a provider code from GET /apiv1/dns/providers/catalog")
	}
	e, ok := catalogByCode[code]
	switch {
	case code == "exec" || code == "manual":
		return nil, apperr.InvalidField("provider", "%q is not available here: it needs a program or a person on the server", code)
	case !ok:
		return nil, apperr.InvalidField("provider", "unknown DNS provider %q; see GET /apiv1/dns/providers/catalog", code)
	case e.unusable != "":
		return nil, apperr.InvalidField("provider", "%q is not available here: %s", code, e.unusable)
	}
	return e, nil
}

// validName trims and checks a provider's name.
func validName(raw string) (string, error) {
	name := strings.TrimSpace(raw)
	switch {
	case name == "":
		return "", apperr.InvalidField("name", "is required")
	case utf8.RuneCountInString(name) > MaxNameLength:
		return "", apperr.InvalidField("name", "has %d characters; at most %d", utf8.RuneCountInString(name), MaxNameLength)
	case !printable(name, false):
		return "", apperr.InvalidField("name", "must be printable text")
	}
	return name, nil
}

// printable reports whether s is valid UTF-8 without control characters
// (but for newlines, carriage returns and tabs when multiline, which
// PEM keys and JSON service accounts hold).
func printable(s string, multiline bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// validSettings checks settings against the provider's catalog entry.
func validSettings(e *entry, settings map[string]string) error {
	if len(settings) > MaxSettings {
		return apperr.InvalidField("settings", "has %d settings; at most %d", len(settings), MaxSettings)
	}
	for _, k := range keysOf(settings) {
		field := "settings." + k
		if why := refusal(k); why != "" {
			return apperr.InvalidField(field, "%s is refused: %s", k, why)
		}
		if !e.known[k] {
			return apperr.InvalidField(field, "%s is not a setting of DNS provider %s; see GET /apiv1/dns/providers/catalog", k, e.Code)
		}
		v := settings[k]
		switch {
		case strings.TrimSpace(v) == "":
			return apperr.InvalidField(field, "is empty; leave %s out instead", k)
		case len(v) > MaxValueBytes:
			return apperr.InvalidField(field, "is %d bytes long; at most %d", len(v), MaxValueBytes)
		case !printable(v, true):
			return apperr.InvalidField(field, "must be printable text")
		}
	}
	if len(e.Required) == 0 {
		return nil
	}
	given := map[string]bool{}
	for k := range settings {
		given[k] = true
		if target := e.aliasOf[k]; target != "" {
			given[target] = true
		}
	}
	for _, set := range e.Required {
		if !slices.ContainsFunc(set, func(k string) bool { return !given[k] }) {
			return nil
		}
	}
	if len(e.Required) == 1 {
		var missing []string
		for _, k := range e.Required[0] {
			if !given[k] {
				missing = append(missing, k)
			}
		}
		return apperr.InvalidField("settings", "DNS provider %s needs %s; missing %s", e.Code,
			strings.Join(e.Required[0], ", "), strings.Join(missing, ", "))
	}
	alts := make([]string, len(e.Required))
	for i, set := range e.Required {
		alts[i] = strings.Join(set, " + ")
	}
	return apperr.InvalidField("settings", "DNS provider %s needs one of: %s", e.Code, strings.Join(alts, "; or "))
}
