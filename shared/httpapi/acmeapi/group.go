package acmeapi

import (
	"context"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// Paths of the seed's routes.
const (
	PathProviders  = "/api/v1/acme/providers"
	PathCreate     = "/api/v1/acme/account/create"
	PathAccounts   = "/api/v1/acme/accounts"
	PathSetDefault = "/api/v1/acme/accounts/set-default"
	PathEnable     = "/api/v1/acme/accounts/enable"
	PathDisable    = "/api/v1/acme/accounts/disable"
	PathDelete     = "/api/v1/acme/accounts/delete"
)

// ObType is the API key permission object type of every account route.
const ObType = "acme_accounts"

// Paging of GET /api/v1/acme/accounts.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// Group is the seed 004 route group (its own Lambda function). g's
// refusals are written in this dialect's envelope.
func Group(svc *acmeacct.Service, g *httpapi.Guard) httpapi.Group {
	g = g.WithErrors(writeError)
	h := handlers{svc: svc}
	scope := func(action string) httpapi.Scope { return httpapi.Scope{ObType: ObType, Action: action} }
	return httpapi.Group{Name: "acmeapi", Prefix: "/api/v1/acme/", Errors: writeError, Routes: []httpapi.Route{
		{Method: "GET", Path: PathProviders, Handler: g.Public(endpoint(h.providers))},
		{Method: "POST", Path: PathCreate, Handler: g.User(scope("create"), endpoint(h.create))},
		{Method: "GET", Path: PathAccounts, Handler: g.User(scope("read"), endpoint(h.list))},
		{Method: "POST", Path: PathSetDefault, Handler: g.User(scope("update"), endpoint(h.setDefault))},
		{Method: "POST", Path: PathEnable, Handler: g.User(scope("update"), endpoint(h.enable))},
		{Method: "POST", Path: PathDisable, Handler: g.User(scope("update"), endpoint(h.disable))},
		{Method: "POST", Path: PathDelete, Handler: g.User(scope("delete"), endpoint(h.delete))},
	}}
}

type handlers struct{ svc *acmeacct.Service }

// CreateAccountRequest is the body of POST /api/v1/acme/account/create.
type CreateAccountRequest struct {
	ProviderName string `json:"providerName" binding:"required"`
	Email        string `json:"email" binding:"required,email"`
	EABKid       string `json:"eabKid"`
	EABHMACKey   string `json:"eabHmacKey"`
}

// SetDefaultRequest is the body of POST /api/v1/acme/accounts/set-default.
type SetDefaultRequest struct {
	ProviderID int64 `json:"providerId" binding:"required"`
	AccountID  int64 `json:"accountId" binding:"required"`
}

// IDRequest is the body of enable, disable and delete.
type IDRequest struct {
	ID int64 `json:"id" binding:"required"`
}

// CreatedAccount is the item create answers: never a key or the EAB HMAC
// key, the EAB key id only when one was given.
type CreatedAccount struct {
	ID         int64  `json:"id"`
	ProviderID int64  `json:"providerId"`
	Email      string `json:"email"`
	Status     string `json:"status"`
	EABKid     string `json:"eabKid,omitempty"`
}

// AccountItem is an item of the account list.
type AccountItem struct {
	ID           int64     `json:"id"`
	ProviderID   int64     `json:"providerId"`
	ProviderName string    `json:"providerName"`
	Email        string    `json:"email"`
	Status       string    `json:"status"`
	IsDefault    bool      `json:"isDefault"`
	AccountURL   string    `json:"accountUrl"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
	// LastError is why the CA refused the registration (status failed).
	LastError string `json:"lastError,omitempty"`
}

// DefaultItem is what set-default answers.
type DefaultItem struct {
	ProviderID int64 `json:"providerId"`
	AccountID  int64 `json:"accountId"`
}

// StatusItem is what enable and disable answer.
type StatusItem struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
}

// DeletedItem is what delete answers.
type DeletedItem struct {
	ID      int64 `json:"id"`
	Deleted bool  `json:"deleted"`
}

func (h handlers) providers(r *http.Request) (any, error) {
	ps, err := h.svc.Providers(r.Context())
	if err != nil {
		return nil, err
	}
	if ps == nil {
		ps = []acmeacct.Provider{}
	}
	return Page[acmeacct.Provider]{Items: ps, Total: len(ps), Page: 1, PageSize: len(ps)}, nil
}

func (h handlers) create(r *http.Request) (any, error) {
	var req CreateAccountRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	a, err := h.svc.Create(r.Context(), httpapi.TargetUser(r.Context()), acmeacct.NewAccount{
		ProviderName: strings.TrimSpace(req.ProviderName),
		Email:        strings.TrimSpace(req.Email),
		EABKid:       strings.TrimSpace(req.EABKid),
		EABHMACKey:   strings.TrimSpace(req.EABHMACKey),
	})
	if err != nil {
		return nil, err
	}
	return one(CreatedAccount{ID: a.ID, ProviderID: a.ProviderID, Email: a.Email, Status: a.Status, EABKid: a.EABKid}), nil
}

// statuses are the values the list's status filter takes.
var statuses = []string{acmeacct.StatusPending, acmeacct.StatusActive, acmeacct.StatusDisabled, acmeacct.StatusFailed}

func (h handlers) list(r *http.Request) (any, error) {
	q := r.URL.Query()
	page, err := positiveInt(q, "page", 1)
	if err != nil {
		return nil, err
	}
	pageSize, err := positiveInt(q, "pageSize", DefaultPageSize)
	if err != nil {
		return nil, err
	}
	pageSize = min(pageSize, MaxPageSize)
	providerID, err := positiveInt(q, "providerId", 0)
	if err != nil {
		return nil, err
	}
	f := acmeacct.Filter{ProviderID: int64(providerID), Status: strings.TrimSpace(q.Get("status")),
		EmailContains: strings.TrimSpace(q.Get("email"))}
	if f.Status != "" && !slices.Contains(statuses, f.Status) {
		return nil, &paramError{"status must be one of " + strings.Join(statuses, ", ")}
	}
	offset := math.MaxInt // a page beyond any list: empty, with the total
	if page-1 <= math.MaxInt/pageSize {
		offset = (page - 1) * pageSize
	}
	accts, total, err := h.svc.List(r.Context(), httpapi.TargetUser(r.Context()), f, offset, pageSize)
	if err != nil {
		return nil, err
	}
	items := make([]AccountItem, 0, len(accts))
	for _, a := range accts {
		items = append(items, AccountItem{ID: a.ID, ProviderID: a.ProviderID, ProviderName: a.ProviderName,
			Email: a.Email, Status: a.Status, IsDefault: a.IsDefault, AccountURL: a.AccountURL,
			CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, LastError: a.LastError})
	}
	return Page[AccountItem]{Items: items, Total: total, Page: page, PageSize: pageSize}, nil
}

func (h handlers) setDefault(r *http.Request) (any, error) {
	var req SetDefaultRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	a, err := h.svc.SetDefault(r.Context(), httpapi.TargetUser(r.Context()), req.ProviderID, req.AccountID)
	if err != nil {
		return nil, err
	}
	return one(DefaultItem{ProviderID: a.ProviderID, AccountID: a.ID}), nil
}

func (h handlers) enable(r *http.Request) (any, error) {
	return h.setStatus(r, h.svc.Enable)
}

func (h handlers) disable(r *http.Request) (any, error) {
	return h.setStatus(r, h.svc.Disable)
}

func (h handlers) setStatus(r *http.Request, fn func(ctx context.Context, userID, id int64) (acmeacct.Account, error)) (any, error) {
	var req IDRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	a, err := fn(r.Context(), httpapi.TargetUser(r.Context()), req.ID)
	if err != nil {
		return nil, err
	}
	return one(StatusItem{ID: a.ID, Status: a.Status}), nil
}

func (h handlers) delete(r *http.Request) (any, error) {
	var req IDRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := h.svc.Delete(r.Context(), httpapi.TargetUser(r.Context()), req.ID); err != nil {
		return nil, err
	}
	return one(DeletedItem{ID: req.ID, Deleted: true}), nil
}

// decode reads the JSON body into *req (1001 when it is not the JSON the
// route takes) and validates it (2002).
func decode(r *http.Request, req any) error {
	if err := httpapi.DecodeJSON(r, req); err != nil {
		return err
	}
	return validate(req)
}

// positiveInt reads an optional query parameter that must be a positive
// integer; absent or empty is def.
func positiveInt(q url.Values, name string, def int) (int, error) {
	raw := strings.TrimSpace(q.Get(name))
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		return 0, &paramError{name + " must be a positive integer"}
	}
	return n, nil
}
