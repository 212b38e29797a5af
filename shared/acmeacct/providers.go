package acmeacct

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// builtinEpoch is when the built-in providers "were created".
var builtinEpoch = time.Date(2026, 1, 20, 10, 0, 0, 0, time.UTC)

// Builtins are the providers every deployment has; ids 1 and 2 are those
// of seed 004's appendix. Directories can be overridden per deployment
// (CERTFLEET_CA_<NAME>_DIRECTORY).
var Builtins = []Provider{
	{ID: 1, Name: "letsencrypt", Title: "Let's Encrypt", DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory"},
	{ID: 2, Name: "google", Title: "Google Trust Services", DirectoryURL: "https://dv.acme-v02.api.pki.goog/directory", RequiresEAB: true},
	{ID: 3, Name: "letsencrypt-staging", Title: "Let's Encrypt (staging)", DirectoryURL: "https://acme-staging-v02.api.letsencrypt.org/directory"},
	{ID: 4, Name: "google-staging", Title: "Google Trust Services (staging)", DirectoryURL: "https://dv.acme-v02.test-api.pki.goog/directory", RequiresEAB: true},
	{ID: 5, Name: "zerossl", Title: "ZeroSSL", DirectoryURL: "https://acme.zerossl.com/v2/DV90", RequiresEAB: true},
	{ID: 6, Name: "buypass", Title: "Buypass Go SSL", DirectoryURL: "https://api.buypass.com/acme/directory"},
	{ID: 7, Name: "sslcom", Title: "SSL.com", DirectoryURL: "https://acme.ssl.com/sslcom-dv-ecc", RequiresEAB: true},
}

// customIDBase keeps admin-added provider ids clear of the built-in ones.
const customIDBase = 100

// metaTTL is how long a CA's directory meta is kept before it is read again.
const metaTTL = 24 * time.Hour

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,31}$`)

func providerKey(id int64) store.Key {
	return store.Key{Table: Table, PK: "providers", SK: fmt.Sprintf("provider#%019d", id)}
}
func providerNameKey(name string) store.Key {
	return store.Key{Table: Table, PK: "providers", SK: "name#" + name}
}
func metaKey(id int64) store.Key {
	return store.Key{Table: Table, PK: "providers", SK: fmt.Sprintf("meta#%019d", id)}
}

// Providers lists every provider: the built-ins (with their directory
// overrides) and those admins added, each with its cached directory meta.
func (s *Service) Providers(ctx context.Context) ([]Provider, error) {
	out := make([]Provider, 0, len(Builtins))
	for _, p := range Builtins {
		out = append(out, s.builtin(p))
	}
	page, err := s.st.Query(ctx, store.Query{Table: Table, PK: "providers", SKPrefix: "provider#", Limit: store.MaxQueryLimit})
	if err != nil {
		return nil, fmt.Errorf("acmeacct: list providers: %w", err)
	}
	for _, it := range page.Items {
		var p Provider
		if err := store.DecodeJSON(it, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	metas, err := s.st.Query(ctx, store.Query{Table: Table, PK: "providers", SKPrefix: "meta#", Limit: store.MaxQueryLimit})
	if err != nil {
		return nil, fmt.Errorf("acmeacct: list provider meta: %w", err)
	}
	for _, it := range metas.Items {
		var m DirectoryMeta
		if err := store.DecodeJSON(it, &m); err != nil {
			return nil, err
		}
		for i := range out {
			if metaKey(out[i].ID).SK == it.SK {
				out[i].Meta = &m
			}
		}
	}
	return out, nil
}

// builtin is a built-in provider as this deployment sees it.
func (s *Service) builtin(p Provider) Provider {
	p.Status, p.CreatedAt, p.UpdatedAt = "active", builtinEpoch, builtinEpoch
	if dir, ok := s.cfg.Directories[p.Name]; ok {
		p.DirectoryURL = dir
	}
	return p
}

// ProviderByName finds a provider; unknown is Invalid naming providerName.
// A built-in costs no store read; a custom one two.
func (s *Service) ProviderByName(ctx context.Context, name string) (Provider, error) {
	unknown := apperr.InvalidField("providerName", "unknown provider %q: see /api/v1/acme/providers", name)
	if i := slices.IndexFunc(Builtins, func(p Provider) bool { return p.Name == name }); i >= 0 {
		return s.builtin(Builtins[i]), nil
	}
	it, err := s.st.Get(ctx, providerNameKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return Provider{}, unknown
	}
	if err != nil {
		return Provider{}, err
	}
	id, err := strconv.ParseInt(string(it.Value), 10, 64)
	if err != nil {
		return Provider{}, fmt.Errorf("acmeacct: provider name item %s holds %q", it.Key, it.Value)
	}
	p, err := s.ProviderByID(ctx, id)
	if apperr.CodeOf(err) == apperr.NotFound {
		return Provider{}, unknown
	}
	return p, err
}

// ProviderByID finds a provider; unknown is NotFound. A built-in costs no
// store read; a custom one one.
func (s *Service) ProviderByID(ctx context.Context, id int64) (Provider, error) {
	if i := slices.IndexFunc(Builtins, func(p Provider) bool { return p.ID == id }); i >= 0 {
		return s.builtin(Builtins[i]), nil
	}
	var p Provider
	_, err := store.GetJSON(ctx, s.st, providerKey(id), &p)
	if errors.Is(err, store.ErrNotFound) {
		return Provider{}, apperr.New(apperr.NotFound, "provider %d not found", id)
	}
	return p, err
}

// NewProvider is a custom ACME CA an admin adds.
type NewProvider struct {
	Name         string `json:"name"`
	Title        string `json:"title"`
	DirectoryURL string `json:"directoryUrl"`
	RequiresEAB  bool   `json:"requiresEab"`
}

// AddProvider adds a custom CA (admins only: the caller checks). Its
// directory must answer, and its meta decides whether EAB is required.
func (s *Service) AddProvider(ctx context.Context, np NewProvider) (Provider, error) {
	np.Name = strings.TrimSpace(np.Name)
	if !providerName.MatchString(np.Name) {
		return Provider{}, apperr.InvalidField("name", "use 2 to 32 lower-case letters, digits or '-'")
	}
	u, err := url.Parse(np.DirectoryURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return Provider{}, apperr.InvalidField("directoryUrl", "must be an https URL of an ACME directory")
	}
	if _, err := s.ProviderByName(ctx, np.Name); err == nil {
		return Provider{}, &apperr.Error{Code: apperr.Conflict, Field: "name", Message: fmt.Sprintf("provider %q already exists", np.Name)}
	}
	meta, err := s.ca.Directory(ctx, np.DirectoryURL)
	if err != nil {
		return Provider{}, apperr.InvalidField("directoryUrl", "the ACME directory did not answer: %v", err)
	}
	n, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "acme_providers"}, 1, time.Time{})
	if err != nil {
		return Provider{}, err
	}
	now := s.now()
	p := Provider{ID: customIDBase + n, Name: np.Name, Title: np.Title, DirectoryURL: np.DirectoryURL,
		RequiresEAB: np.RequiresEAB || meta.ExternalAccountRequired, Status: "active", CreatedAt: now, UpdatedAt: now}
	it, err := store.JSONItem(providerKey(p.ID), p)
	if err != nil {
		return Provider{}, err
	}
	err = s.st.Transact(ctx, []store.Write{
		store.PutWrite(it, store.IfAbsent),
		store.PutWrite(store.Item{Key: providerNameKey(p.Name), Value: []byte(fmt.Sprint(p.ID))}, store.IfAbsent),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return Provider{}, &apperr.Error{Code: apperr.Conflict, Field: "name", Message: fmt.Sprintf("provider %q already exists", np.Name)}
	}
	if err != nil {
		return Provider{}, err
	}
	s.cacheMeta(ctx, p.ID, meta)
	p.Meta = &meta
	return p, nil
}

// cacheMeta keeps a provider's directory meta for metaTTL; failing to is
// only logged (the meta is informative).
func (s *Service) cacheMeta(ctx context.Context, providerID int64, meta DirectoryMeta) {
	it, err := store.JSONItem(metaKey(providerID), meta)
	if err == nil {
		it.ExpiresAt = s.now().Add(metaTTL)
		_, err = s.st.Put(ctx, it, store.Always)
	}
	if err != nil {
		s.log.Warn("acmeacct: caching directory meta failed", "provider", providerID, "err", err)
	}
}
