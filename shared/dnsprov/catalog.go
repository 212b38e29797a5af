package dnsprov

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

//go:generate go run ./internal/gencatalog

// catalogJSON is lego's DNS providers as internal/gencatalog read them from
// the descriptors of the lego version in go.mod.
//
//go:embed catalog.json
var catalogJSON []byte

// Setting is one setting of a DNS provider: a lego environment variable.
type Setting struct {
	Env         string `json:"env"`
	Description string `json:"description"`
}

// CatalogEntry is a DNS provider users can store credentials for.
type CatalogEntry struct {
	// Code is lego's provider code ("cloudflare"), what Create takes.
	Code string `json:"code"`
	Name string `json:"name"`
	URL  string `json:"url"`
	// Credentials and Additional are the settings the provider accepts,
	// in lego's order; settings that certfleet refuses (see Create) are
	// left out.
	Credentials []Setting `json:"credentials"`
	Additional  []Setting `json:"additional"`
	// Required lists the sets of credentials that each suffice: the
	// settings of a provider must include every name of at least one set
	// (an alias lego documents stands for its name).
	Required [][]string `json:"required"`
}

// rawCatalog is catalog.json's shape.
type rawCatalog struct {
	Lego      string `json:"lego"`
	Providers []struct {
		Code        string    `json:"code"`
		Name        string    `json:"name"`
		URL         string    `json:"url"`
		Credentials []Setting `json:"credentials"`
		Additional  []Setting `json:"additional"`
	} `json:"providers"`
}

// entry is a catalog provider with what validation needs.
type entry struct {
	CatalogEntry
	// known holds every setting name lego lists for it, refused or not.
	known map[string]bool
	// aliasOf maps an alias to the name it stands for.
	aliasOf map[string]string
	// unusable says why no credentials of this provider can be stored;
	// "" when they can.
	unusable string
}

// learn records the settings lego lists (known, aliases) and returns
// those a user may give.
func (e *entry) learn(settings []Setting) []Setting {
	allowed := []Setting{}
	for _, s := range settings {
		e.known[s.Env] = true
		if target := aliasTarget(s.Description); target != "" {
			e.aliasOf[s.Env] = target
		}
		if refusal(s.Env) == "" {
			allowed = append(allowed, s)
		}
	}
	return allowed
}

var (
	catalogLego    string
	catalogEntries []*entry
	catalogByCode  map[string]*entry
)

func init() {
	var raw rawCatalog
	if err := json.Unmarshal(catalogJSON, &raw); err != nil {
		panic(fmt.Sprintf("dnsprov: catalog.json: %v", err))
	}
	catalogLego = raw.Lego
	catalogByCode = map[string]*entry{}
	for _, p := range raw.Providers {
		e := &entry{CatalogEntry: CatalogEntry{Code: p.Code, Name: p.Name, URL: p.URL},
			known: map[string]bool{}, aliasOf: map[string]string{}}
		e.Credentials = e.learn(p.Credentials)
		e.Additional = e.learn(p.Additional)
		e.Required, e.unusable = requiredSets(p.Code, p.Credentials, e.aliasOf)
		catalogEntries = append(catalogEntries, e)
		catalogByCode[p.Code] = e
	}
}

// LegoVersion is the lego version the catalog was generated from.
func LegoVersion() string { return catalogLego }

// Catalog returns the DNS providers users can store credentials for,
// sorted by code. Providers whose every way to authenticate needs a file
// on the server (see Create) are left out.
func Catalog() []CatalogEntry {
	out := make([]CatalogEntry, 0, len(catalogEntries))
	for _, e := range catalogEntries {
		if e.unusable == "" {
			out = append(out, clone(e.CatalogEntry))
		}
	}
	return out
}

// Lookup returns the catalog entry of a provider code, if users can store
// credentials for it.
func Lookup(code string) (CatalogEntry, bool) {
	e, ok := catalogByCode[code]
	if !ok || e.unusable != "" {
		return CatalogEntry{}, false
	}
	return clone(e.CatalogEntry), true
}

func clone(c CatalogEntry) CatalogEntry {
	c.Credentials, c.Additional = slices.Clone(c.Credentials), slices.Clone(c.Additional)
	req := make([][]string, len(c.Required))
	for i, set := range c.Required {
		req[i] = slices.Clone(set)
	}
	c.Required = req
	return c
}

// aliasDescription is how lego's descriptors mark an alias ("Alias to
// CF_API_EMAIL", "Alias on `OCI_REGION`").
var aliasDescription = regexp.MustCompile("^Alias (?:to|on) `?([A-Za-z0-9_]+)`?\\s*$")

func aliasTarget(description string) string {
	if m := aliasDescription.FindStringSubmatch(strings.TrimSpace(description)); m != nil {
		return m[1]
	}
	return ""
}

// optionalDescription is how descriptors mark a credential that may be
// left out.
var optionalDescription = regexp.MustCompile(`(?i)\boptional\b|\(default:`)

// requiredSets returns the sets of credentials that suffice for a
// provider, or why it cannot be used. Unless credentialSets or unusable
// say otherwise, the one set is every credential lego lists that is not
// an alias, not marked optional and not refused (a refused credential is
// an alternative way in, like a key file beside a key).
func requiredSets(code string, creds []Setting, aliasOf map[string]string) ([][]string, string) {
	if why, ok := unusable[code]; ok {
		return nil, why
	}
	if sets, ok := credentialSets[code]; ok {
		return sets, ""
	}
	var set []string
	for _, s := range creds {
		if aliasOf[s.Env] == "" && !optionalDescription.MatchString(s.Description) && refusal(s.Env) == "" {
			set = append(set, s.Env)
		}
	}
	if len(set) == 0 {
		return nil, "lego's provider takes no credentials from settings; it reads them from files or services of the server"
	}
	return [][]string{set}, ""
}

// unusable are providers whose only way to authenticate, according to
// their lego source, is a file on the server.
var unusable = map[string]string{
	"transip":     "lego's provider reads its private key from a file on the server (TRANSIP_PRIVATE_KEY_PATH)",
	"oraclecloud": "lego's provider reads its private key from a file on the server (OCI_PRIVATE_KEY_PATH)",
}

// credentialSets are the providers whose descriptors list several
// alternative ways to authenticate (or list ambient ones) among their
// credentials, with the sets certfleet accepts; read from each provider's
// lego source. A test checks that every name here is in the catalog.
var credentialSets = map[string][][]string{
	"cloudflare": {{"CF_DNS_API_TOKEN"}, {"CF_API_EMAIL", "CF_API_KEY"}},
	"route53":    {{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}},
	"azure":      {{"AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP"}},
	"gcloud":     {{"GCE_SERVICE_ACCOUNT"}},
	"designate": {
		{"OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD"},
		{"OS_AUTH_URL", "OS_USER_ID", "OS_PASSWORD"},
		{"OS_AUTH_URL", "OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_SECRET"},
	},
	"edgedns": {{"AKAMAI_HOST", "AKAMAI_CLIENT_TOKEN", "AKAMAI_CLIENT_SECRET", "AKAMAI_ACCESS_TOKEN"}},
	"joker":   {{"JOKER_USERNAME", "JOKER_PASSWORD"}, {"JOKER_API_KEY"}},
	"nicmanager": {
		{"NICMANAGER_API_LOGIN", "NICMANAGER_API_USERNAME", "NICMANAGER_API_PASSWORD"},
		{"NICMANAGER_API_EMAIL", "NICMANAGER_API_PASSWORD"},
	},
	"ovh":     {{"OVH_APPLICATION_KEY", "OVH_APPLICATION_SECRET", "OVH_CONSUMER_KEY"}, {"OVH_CLIENT_ID", "OVH_CLIENT_SECRET"}, {"OVH_ACCESS_TOKEN"}},
	"httpreq": {{"HTTPREQ_ENDPOINT"}},
}

// refusedNames are settings that would make the worker read files on the
// server or act as the server's own cloud identity, by why.
var refusedNames = map[string]string{
	"AKAMAI_EDGERC":              msgServerFile,
	"AKAMAI_EDGERC_SECTION":      msgServerFile,
	"AWS_PROFILE":                msgServerFile,
	"AWS_SDK_LOAD_CONFIG":        msgServerFile,
	"OCI_PROFILE":                msgServerFile,
	"HYPERONE_PASSPORT_LOCATION": msgServerFile,
	"ALICLOUD_RAM_ROLE":          msgServerIdentity,
	"ALIESA_RAM_ROLE":            msgServerIdentity,
	"OCI_AUTH_TYPE":              msgServerIdentity,
	"AZURE_AUTH_METHOD":          msgServerIdentity,
}

const (
	msgServerFile     = "it makes lego read a file on certfleet's servers"
	msgServerIdentity = "it makes lego act as certfleet's own cloud identity"
)

// refusal says why a setting name is refused, or "".
func refusal(name string) string {
	switch {
	case strings.HasSuffix(name, "_FILE"):
		return "lego reads a setting ending in _FILE as the path of a file on certfleet's servers (never accepted); give the value itself"
	case strings.HasSuffix(name, "_PATH"):
		return "it names a file on certfleet's servers (settings ending in _PATH are never accepted)"
	}
	return refusedNames[name]
}
