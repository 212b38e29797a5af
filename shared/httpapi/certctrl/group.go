package certctrl

import (
	"net/http"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/identity/passkey"
)

// AuthDeps is what the auth route group serves.
type AuthDeps struct {
	Identity     *identity.Service
	DeviceTokens *devicetoken.Service
	Passkeys     *passkey.Service
	Guard        *httpapi.Guard
	Cookies      Sessions
}

// AuthGroup is the auth route group (its own Lambda function): /auth/*
// (passwords, sessions, passkeys, device token refresh), API keys, the
// permission catalog and the admin user list.
func AuthGroup(d AuthDeps) httpapi.Group {
	ids, g := d.Identity, d.Guard
	routes := authRoutes{ids: ids, devices: d.DeviceTokens, guard: g, cookies: d.Cookies}.routes()
	routes = append(routes, WebAuthnRoutes(d.Passkeys, ids, g, d.Cookies)...)
	routes = append(routes, apiKeyRoutes{ids: ids, guard: g}.routes()...)
	routes = append(routes,
		httpapi.Route{Method: "GET", Path: "/apiv1/permissions/catalog", Handler: g.Public(httpapi.Endpoint(
			func(http.ResponseWriter, *http.Request) (int, any, error) {
				return http.StatusOK, identity.Catalog, nil
			}))},
		httpapi.Route{Method: "GET", Path: "/apiv1/admin/users", Handler: g.Admin(httpapi.Endpoint(
			func(w http.ResponseWriter, r *http.Request) (int, any, error) {
				limit, cursor, err := pageParams(r)
				if err != nil {
					return 0, nil, err
				}
				users, next, err := ids.ListUsers(r.Context(), limit, cursor)
				if err != nil {
					return 0, nil, err
				}
				return http.StatusOK, listPage(w, users, next), nil
			}))},
	)
	return httpapi.Group{Name: "auth", Routes: routes}
}
