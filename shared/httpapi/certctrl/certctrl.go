// Package certctrl is the cert-ctrl dialect (seed 000): its /auth/* and
// /apiv1/* routes translated onto the domain services, in the default
// envelope of package httpapi.
package certctrl

import (
	"net/http"
	"strconv"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// userRoutes registers a user-scoped route twice: under
// /apiv1/users/{user_id}/<suffix> and under the /apiv1/me/<suffix> alias.
func userRoutes(g *httpapi.Guard, method, suffix string, scope httpapi.Scope, h http.Handler) []httpapi.Route {
	guarded := g.User(scope, h)
	return []httpapi.Route{
		{Method: method, Path: "/apiv1/users/{" + httpapi.UserPathParam + "}/" + suffix, Handler: guarded},
		{Method: method, Path: "/apiv1/me/" + suffix, Handler: guarded},
	}
}

// Page bounds of list routes: ?limit= (default 100, at most 1000) and an
// opaque ?cursor= from the previous page's "next_cursor".
const (
	defaultLimit = 100
	maxLimit     = 1000
)

func pageParams(r *http.Request) (limit int, cursor string, err error) {
	limit = defaultLimit
	if raw := r.URL.Query().Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxLimit {
			return 0, "", apperr.InvalidField("limit", "must be a whole number from 1 to %d", maxLimit)
		}
		limit = n
	}
	return limit, r.URL.Query().Get("cursor"), nil
}

// listPage is a page of a list in the envelope's data, with the cursor of
// the next page in the X-Next-Cursor header ("" when this is the last).
func listPage[T any](w http.ResponseWriter, items []T, next string) []T {
	if next != "" {
		w.Header().Set("X-Next-Cursor", next)
	}
	if items == nil {
		items = []T{}
	}
	return items
}
