package identity

import (
	"fmt"
	"slices"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Permission grants actions on one object type, for one object id or "*".
type Permission struct {
	ObType  string   `json:"obtype"`
	ObID    string   `json:"obid"`
	Actions []string `json:"actions"`
}

// Scope is one entry of the permission catalog.
type Scope struct {
	ObType      string   `json:"obtype"`
	Actions     []string `json:"actions"`
	Description string   `json:"description"`
}

// Catalog is every object type an API key can be granted, with its
// actions (GET /apiv1/permissions/catalog). Names follow the seeds.
var Catalog = []Scope{
	{"certificates", []string{"read", "create", "update", "delete", "issue", "export", "assign"}, "certificates, their issues and exports"},
	{"acme_accounts", []string{"read", "create", "update", "delete"}, "ACME accounts at CA providers"},
	{"dns_providers", []string{"read", "create", "update", "delete"}, "DNS provider credentials for DNS-01 validation (values are never returned)"},
	{"cas", []string{"read", "create", "update", "delete", "issue"}, "private certificate authorities"},
	{"devices", []string{"read", "create", "update", "delete"}, "devices that receive certificates"},
	{"ForDeviceAuthenticate", []string{"authenticate", "validate", "revoke"}, "registering devices with an API key (cert-ctrl login --apikey)"},
	{"domains", []string{"read", "create", "update", "delete"}, "domains and their validation"},
	{"ForInstallConfigUpdate", []string{"update"}, "patching a device's install configuration"},
	{"notifications", []string{"read", "update"}, "notification channels, subscriptions and inbox"},
	{"wallets", []string{"read"}, "wallets, charges and payments"},
}

const (
	maxPermissions = 50
	maxObIDLen     = 64
)

// ValidatePermissions checks a grant list against the catalog; the error
// names the offending entry.
func ValidatePermissions(perms []Permission) error {
	if len(perms) == 0 {
		return apperr.InvalidField("permissions", "grant at least one permission (see /apiv1/permissions/catalog)")
	}
	if len(perms) > maxPermissions {
		return apperr.InvalidField("permissions", "at most %d entries", maxPermissions)
	}
	for i, p := range perms {
		field := fmt.Sprintf("permissions[%d]", i)
		idx := slices.IndexFunc(Catalog, func(s Scope) bool { return s.ObType == p.ObType })
		if idx < 0 {
			return apperr.InvalidField(field+".obtype", "unknown object type %q (see /apiv1/permissions/catalog)", p.ObType)
		}
		if p.ObID == "" || len(p.ObID) > maxObIDLen {
			return apperr.InvalidField(field+".obid", `is "*" or one object's id`)
		}
		if len(p.Actions) == 0 {
			return apperr.InvalidField(field+".actions", "name at least one action")
		}
		for _, a := range p.Actions {
			if !slices.Contains(Catalog[idx].Actions, a) {
				return apperr.InvalidField(field+".actions", "%q is not an action of %s (allowed: %v)", a, p.ObType, Catalog[idx].Actions)
			}
		}
	}
	return nil
}
