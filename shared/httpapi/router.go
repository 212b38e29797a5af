// Package httpapi is the HTTP edge: route groups as plain http.Handlers,
// the cert-ctrl envelope, the error-code→status table, JSON decoding with
// clear errors, and the middleware every response goes through (request id,
// body cap, panic recovery, access log).
//
// The same handlers run under AWS Lambda (through aws-lambda-go-api-proxy),
// in the local all-in-one server and in httptest.
package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Route is one endpoint: a method and a net/http pattern path such as
// "/apiv1/users/{user_id}/certificates".
type Route struct {
	Method  string
	Path    string
	Handler http.Handler
}

// Group is a route group: the routes one Lambda function serves. The local
// server mounts every group on one router.
type Group struct {
	Name   string
	Routes []Route
	// Prefix and Errors let a dialect with its own envelope answer the
	// router's 404 and 405 for paths under Prefix; nil Errors means the
	// cert-ctrl envelope.
	Prefix string
	Errors func(w http.ResponseWriter, r *http.Request, err error, params map[string]any)
}

// Router dispatches to its groups' routes. An unknown path is a 404 and a
// known path with another method a 405 (with Allow), both in the envelope.
type Router struct {
	groups  []Group
	mux     *http.ServeMux
	allowed map[string][]string // path pattern → its methods
	paths   *http.ServeMux      // path pattern without method, for 405s
}

// NewRouter builds a router over the groups. A route registered twice is a
// programming error and panics, as net/http does.
func NewRouter(groups ...Group) *Router {
	rt := &Router{groups: groups, mux: http.NewServeMux(), allowed: map[string][]string{}, paths: http.NewServeMux()}
	for _, g := range groups {
		for _, r := range g.Routes {
			rt.mux.Handle(r.Method+" "+r.Path, r.Handler)
			if _, seen := rt.allowed[r.Path]; !seen {
				rt.paths.Handle(r.Path, http.NotFoundHandler())
			}
			rt.allowed[r.Path] = append(rt.allowed[r.Path], r.Method)
		}
	}
	// Every request no route takes lands here: patterns that match the
	// method win over this method-less catch-all.
	rt.mux.HandleFunc("/", rt.unmatched)
	return rt
}

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

func (rt *Router) unmatched(w http.ResponseWriter, r *http.Request) {
	if _, pattern := rt.paths.Handler(r); pattern != "" {
		methods := slices.Clone(rt.allowed[pattern])
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead)
		}
		slices.Sort(methods)
		w.Header().Set("Allow", strings.Join(methods, ", "))
		rt.refuse(w, r, apperr.New(apperr.MethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	rt.refuse(w, r, apperr.New(apperr.NotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// refuse writes err in the envelope of the group whose prefix the path is
// under, or the cert-ctrl envelope.
func (rt *Router) refuse(w http.ResponseWriter, r *http.Request, err error) {
	for _, g := range rt.groups {
		if g.Errors != nil && g.Prefix != "" && strings.HasPrefix(r.URL.Path, g.Prefix) {
			g.Errors(w, r, err, nil)
			return
		}
	}
	WriteError(w, r, err)
}
