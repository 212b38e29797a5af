package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

type kaMap map[string]string

func (m kaMap) KeyAuthorization(_ context.Context, token string) (string, error) {
	if token == "broken" {
		return "", errors.New("store down")
	}
	ka, ok := m[token]
	if !ok {
		return "", apperr.New(apperr.NotFound, "unknown token")
	}
	return ka, nil
}

func TestChallengeGroup(t *testing.T) {
	h := httpapi.NewRouter(httpapi.ChallengeGroup(kaMap{"tok": "tok.thumb"}))
	for _, c := range []struct {
		path   string
		status int
		body   string
	}{
		{"/.well-known/acme-challenge/tok", 200, "tok.thumb"},
		{"/.well-known/acme-challenge/nope", 404, "not found\n"},
		{"/.well-known/acme-challenge/broken", 503, "unavailable\n"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != c.status || string(body) != c.body {
			t.Errorf("GET %s = %d %q, want %d %q", c.path, rec.Code, body, c.status, c.body)
		}
		if ct := rec.Header().Get("Content-Type"); ct[:10] != "text/plain" {
			t.Errorf("GET %s: Content-Type %q", c.path, ct)
		}
	}
}
