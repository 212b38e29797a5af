package identity

import (
	"context"
	"slices"
)

// PrincipalKind says how a caller authenticated.
type PrincipalKind string

const (
	KindSession PrincipalKind = "session"
	KindAPIKey  PrincipalKind = "apikey"
)

// Principal is an authenticated caller.
type Principal struct {
	Kind   PrincipalKind
	UserID int64
	// Admin is true only for sessions of admin users: API keys never carry
	// admin rights.
	Admin bool
	// ID identifies the credential: the session digest or the API key id.
	// Rate limits count per ID.
	ID string
	// Permissions bound an API key; sessions have every right of their user.
	Permissions []Permission
}

// CanActFor reports whether the principal may act on userID's objects: its
// own, or anyone's for an admin session.
func (p Principal) CanActFor(userID int64) bool {
	return p.UserID == userID || p.Admin
}

// Allows reports whether the principal may do action on the object of
// obtype with id obid ("" when the route names no single object, e.g. a
// list: then any grant of the action on that type suffices and the handler
// filters). Sessions may do everything their user may.
func (p Principal) Allows(obtype, obid, action string) bool {
	if p.Kind == KindSession {
		return true
	}
	for _, perm := range p.Permissions {
		if perm.ObType == obtype && slices.Contains(perm.Actions, action) &&
			(perm.ObID == "*" || obid == "" || perm.ObID == obid) {
			return true
		}
	}
	return false
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
