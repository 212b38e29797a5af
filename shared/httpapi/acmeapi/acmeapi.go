// Package acmeapi is the ACME account management dialect (seed 004):
// /api/v1/acme/* translated onto the acmeacct service, in the seed's
// envelope. It only translates; every rule (one account per provider and
// email, one default per provider, what may be disabled or deleted) is
// the service's.
//
// # Envelope
//
// Every answer is {"code":C,"message":M,"data":D}. A success is code 0,
// message "success", and data a page {"items":[...],"total":N,"page":P,
// "pageSize":S}; routes about one object answer a page of that one item
// (total 1, page 1, pageSize 1), as the seed shows. A failure has data
// null.
//
// # Codes and HTTP statuses
//
// Successes are HTTP 200. Failures carry both a seed code and a matching
// HTTP status, so that plain HTTP clients, proxies and access logs see a
// failure as one:
//
//	code  HTTP  when
//	1001  400   a parameter is missing its shape: malformed JSON, a value
//	            of the wrong type, a query parameter that is not a positive
//	            integer (page, pageSize, providerId) or an unknown status
//	      413   the body is over httpapi.MaxBodyBytes
//	2001  404   the account (or provider) does not exist for the caller;
//	            another user's account is not found, never forbidden
//	2002  400   a parameter breaks a validation rule: a missing required
//	            field (the gin-validator message the seed shows, e.g.
//	            "Key: 'CreateAccountRequest.ProviderName' Error:Field
//	            validation for 'ProviderName' failed on the 'required' tag",
//	            one line per failing field), a malformed email (the 'email'
//	            tag), and the service's own validation (unknown provider,
//	            EAB missing for a provider that requires it, a providerId
//	            that is not the account's)
//	3002  409   a business rule refused the request (apperr.Conflict), with
//	            the service's message verbatim (acmeacct.MsgDisableDefault,
//	            MsgDeleteDefault, MsgRefRequests, MsgRefCerts, duplicate
//	            accounts, setting a non-active account as default, enabling
//	            an account that is not disabled)
//	4001  401   no credentials, or a session or API key that is not valid
//	4003  403   an API key without the acme_accounts permission the route
//	            needs
//	4029  429   over the per-principal rate limit (Retry-After is set)
//	5000  500   an internal error: logged with its detail and the request
//	            id, shown only as "internal error"
//	      503   a dependency is unavailable (the registration could not be
//	            queued); the message says to try again
//
// The seed defines no codes for authentication; 4001, 4003 and 4029 are
// this package's, in a range the seed does not use.
//
// # Authentication
//
// Like every route group: a session cookie or Authorization: Bearer
// ak_... (an API key). The caller acts on its own accounts only. API keys
// need the acme_accounts permission: read for the list, create for
// account/create, update for set-default, enable and disable, delete for
// delete. GET /api/v1/acme/providers is public (rate-limited per client
// address): the seed's first step calls it before anything else, and it
// lists only the CA providers, nothing of any user.
//
// # Beyond the seed
//
// Accounts have a fourth status, "failed", when the CA refuses the
// registration (a wrong EAB key, say); list items then carry "lastError"
// with the CA's reason, the only way a user learns why. The field is
// absent otherwise. Provider items carry the service's extra "title" and,
// once read, the CA directory's "meta".
package acmeapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// The seed's codes, and this package's for refusals by the guard.
const (
	CodeOK           = 0
	CodeParam        = 1001
	CodeNotFound     = 2001
	CodeValidation   = 2002
	CodeBusiness     = 3002
	CodeUnauthorized = 4001
	CodeForbidden    = 4003
	CodeRateLimited  = 4029
	CodeInternal     = 5000
)

// MsgSuccess is the message of every success.
const MsgSuccess = "success"

// Envelope is every answer of this dialect.
type Envelope struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

// Page is the data of every success.
type Page[T any] struct {
	Items    []T `json:"items"`
	Total    int `json:"total"`
	Page     int `json:"page"`
	PageSize int `json:"pageSize"`
}

// one is a page of a single item.
func one[T any](item T) Page[T] {
	return Page[T]{Items: []T{item}, Total: 1, Page: 1, PageSize: 1}
}

// paramError is a request parameter that is missing its shape (code 1001).
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

// statusOf maps application error codes to this dialect's HTTP status and
// code. Codes not listed are internal.
var statusOf = map[apperr.Code]struct{ HTTP, Code int }{
	apperr.BadJSON:          {http.StatusBadRequest, CodeParam},
	apperr.TooLarge:         {http.StatusRequestEntityTooLarge, CodeParam},
	apperr.Invalid:          {http.StatusBadRequest, CodeValidation},
	apperr.NotFound:         {http.StatusNotFound, CodeNotFound},
	apperr.MethodNotAllowed: {http.StatusMethodNotAllowed, CodeParam},
	apperr.Conflict:         {http.StatusConflict, CodeBusiness},
	apperr.Unauthorized:     {http.StatusUnauthorized, CodeUnauthorized},
	apperr.Forbidden:        {http.StatusForbidden, CodeForbidden},
	apperr.RateLimit:        {http.StatusTooManyRequests, CodeRateLimited},
	apperr.Unavailable:      {http.StatusServiceUnavailable, CodeInternal},
	apperr.Internal:         {http.StatusInternalServerError, CodeInternal},
}

// Status returns the HTTP status, the code and the message that err is
// answered with.
func Status(err error) (httpStatus, code int, message string) {
	var pe *paramError
	if errors.As(err, &pe) {
		return http.StatusBadRequest, CodeParam, pe.msg
	}
	s, ok := statusOf[apperr.CodeOf(err)]
	if !ok {
		s = statusOf[apperr.Internal]
	}
	if s.HTTP == http.StatusInternalServerError {
		return s.HTTP, s.Code, "internal error"
	}
	return s.HTTP, s.Code, apperr.MessageOf(err)
}

// writeError answers err in the envelope; internal errors are logged with
// their detail. Its signature is the guard's (httpapi.Guard.Errors), so
// the guard's refusals come out in this envelope too; params (the guard's
// retry_after) are not part of the seed's envelope and are dropped: the
// guard has set Retry-After already.
func writeError(w http.ResponseWriter, r *http.Request, err error, _ map[string]any) {
	status, code, msg := Status(err)
	if code == CodeInternal {
		httpapi.LoggerFrom(r.Context()).Error("request failed", "err", err)
	}
	writeJSON(w, status, Envelope{Code: code, Message: msg, Data: nil})
}

func writeJSON(w http.ResponseWriter, status int, v Envelope) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("acmeapi: encode response", "err", err)
		status = http.StatusInternalServerError
		b = []byte(`{"code":5000,"message":"internal error","data":null}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// endpoint handles one request and returns the data of the success
// envelope, or an error for the failure envelope.
type endpoint func(r *http.Request) (any, error)

func (fn endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, err := fn(r)
	if err != nil {
		writeError(w, r, err, nil)
		return
	}
	writeJSON(w, http.StatusOK, Envelope{Code: CodeOK, Message: MsgSuccess, Data: data})
}
