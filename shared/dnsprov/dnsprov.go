// Package dnsprov is users' DNS provider credentials: the settings (lego
// environment variables, e.g. CF_DNS_API_TOKEN for "cloudflare") that the
// dns-01-provider validation method writes TXT records with, and the
// catalog of lego's DNS providers they are checked against.
//
// Settings are stored only sealed (keys.Sealer, bound to the user and the
// provider id) and are never returned: records carry the setting names
// alone. Open, for the issuance worker, is the only way back to the values.
//
// Rules: the provider must be in the catalog (lego's, without exec and
// manual); every setting must be one the provider lists; settings that
// would make lego read files on the server or use the server's own cloud
// identity are refused (every name ending in _FILE or _PATH, and a few
// more, see refusedNames); one set of the provider's credentials must be
// complete (CatalogEntry.Required); sizes are bounded (MaxNameLength,
// MaxSettings, MaxValueBytes, MaxPerUser). A user never reaches another
// user's providers (NotFound).
//
// Delete is physical and does not look for certificates that name the
// provider: their next issue fails, because Open answers NotFound with a
// message saying so. A certificate's validation is fixed once issued, so
// an issued certificate naming a deleted provider is not renewed again;
// credentials are rotated with Update, not by delete and create.
//
// The catalog is generated (go generate; see internal/gencatalog) from the
// descriptors of the lego version in go.mod and embedded, so that only the
// worker links lego's providers.
package dnsprov

import "time"

// Tables the service keeps its records in. Records live in the
// certificates' table (certs.Table), in the user's partition "user#<id>",
// under sort keys "dnsprov#<019d id>" and one counter "dnsprov-count";
// package certs reads only its own "cert#" and "count" keys there.
const (
	Table        = "certs"
	CounterTable = "meta"
)

// Bounds of a user's DNS providers.
const (
	MaxPerUser    = 100
	MaxNameLength = 100
	MaxSettings   = 50
	MaxValueBytes = 4096
)

// Provider is a user's stored DNS provider credentials as the user sees
// them: the setting names, never their values.
type Provider struct {
	ID     int64  `json:"id"`
	UserID int64  `json:"user_id"`
	Name   string `json:"name"`
	// Provider is the lego provider code ("cloudflare").
	Provider string `json:"provider"`
	// SettingKeys are the names of the stored settings, sorted.
	SettingKeys []string  `json:"setting_keys"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// NewProvider is what creating a provider takes.
type NewProvider struct {
	// Name is the user's label for the credentials.
	Name string
	// Provider is a catalog code.
	Provider string
	// Settings are lego environment variable names and their values.
	Settings map[string]string
}

// Changes is an update; nil fields stay as they are. The provider code
// cannot change.
type Changes struct {
	Name *string
	// Settings, when not nil, replace every stored setting.
	Settings map[string]string
}

// Filter narrows a listing.
type Filter struct {
	// Allow, when set, keeps only the providers whose id it accepts (e.g.
	// those an API key may read).
	Allow func(id int64) bool
}
