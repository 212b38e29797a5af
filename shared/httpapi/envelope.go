package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/certfleet/certfleet/shared/apperr"
)

// The cert-ctrl envelope (seed 000) is the default for every route: success
// bodies are {"data": ...}; failures are {"error":{"code":<int>,"what":...}}
// and never carry "data". Other dialects translate in their own packages.

// statusOf is the one table from application error codes to HTTP statuses
// and cert-ctrl numeric codes (the agent's table: 5000 INVALID_ARGUMENT,
// 5003 NOT_FOUND, 5013 RATE_LIMITED, 5018 UNAUTHORIZED, 5022 FORBIDDEN,
// 9000 JSON errors).
var statusOf = map[apperr.Code]struct {
	HTTP int
	Code int
}{
	apperr.Invalid:          {http.StatusBadRequest, 5000},
	apperr.BadJSON:          {http.StatusBadRequest, 9000},
	apperr.NotFound:         {http.StatusNotFound, 5003},
	apperr.MethodNotAllowed: {http.StatusMethodNotAllowed, 5005},
	apperr.Conflict:         {http.StatusConflict, 5009},
	apperr.TooLarge:         {http.StatusRequestEntityTooLarge, 5010},
	apperr.RateLimit:        {http.StatusTooManyRequests, 5013},
	apperr.Unauthorized:     {http.StatusUnauthorized, 5018},
	apperr.Forbidden:        {http.StatusForbidden, 5022},
	apperr.Unavailable:      {http.StatusServiceUnavailable, 5030},
	apperr.Internal:         {http.StatusInternalServerError, 5001},
}

// Status returns the HTTP status and cert-ctrl numeric code for err.
func Status(err error) (httpStatus, code int) {
	s, ok := statusOf[apperr.CodeOf(err)]
	if !ok {
		s = statusOf[apperr.Internal]
	}
	return s.HTTP, s.Code
}

// ErrorBody is the failure envelope's "error" member.
type ErrorBody struct {
	Code   int            `json:"code"`
	What   string         `json:"what"`
	Key    string         `json:"key,omitempty"`
	Params map[string]any `json:"params,omitempty"`
}

// WriteData writes {"data": v} with the given status; 204 writes no body.
func WriteData(w http.ResponseWriter, status int, v any) {
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, struct {
		Data any `json:"data"`
	}{v})
}

// WriteError writes err in the failure envelope. Internal errors are logged
// with their detail (and the request id) and shown only as "internal error".
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	WriteErrorBody(w, r, err, nil)
}

// WriteErrorBody is WriteError with params for the envelope.
func WriteErrorBody(w http.ResponseWriter, r *http.Request, err error, params map[string]any) {
	_, code := Status(err)
	WriteErrorCode(w, r, err, code, params)
}

// WriteErrorCode is WriteErrorBody with a route's own numeric error.code in
// place of the table's (the HTTP status still comes from the table): the
// updates poll's 40901 cursor gap.
func WriteErrorCode(w http.ResponseWriter, r *http.Request, err error, code int, params map[string]any) {
	status, _ := Status(err)
	if apperr.CodeOf(err) == apperr.Internal {
		LoggerFrom(r.Context()).Error("request failed", "err", err)
	}
	body := ErrorBody{Code: code, What: apperr.MessageOf(err), Key: apperr.KeyOf(err), Params: params}
	var ae *apperr.Error
	if errors.As(err, &ae) && ae.Field != "" {
		if body.Params == nil {
			body.Params = map[string]any{}
		}
		body.Params["field"] = ae.Field
	}
	writeJSON(w, status, struct {
		Error ErrorBody `json:"error"`
	}{body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("httpapi: encode response", "err", err)
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":5001,"what":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// EndpointFunc handles one request and returns the status and data for the
// success envelope, or an error for the failure envelope. It may set
// headers and cookies on w but writes no body.
type EndpointFunc func(w http.ResponseWriter, r *http.Request) (status int, data any, err error)

// Endpoint adapts an EndpointFunc to an http.Handler in the cert-ctrl envelope.
func Endpoint(fn EndpointFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, data, err := fn(w, r)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		WriteData(w, status, data)
	})
}
