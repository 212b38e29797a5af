package httpapi

import (
	"context"
	"io"
	"net/http"

	"github.com/certfleet/certfleet/shared/apperr"
)

// ChallengePath is the HTTP-01 path (RFC 8555 §8.3), with its token.
const ChallengePath = "/.well-known/acme-challenge/{token}"

// KeyAuthorizations gives the key authorization of an HTTP-01 token
// (issuance.Service). Errors: an apperr NotFound for an unknown or expired
// token; any other error is the store's.
type KeyAuthorizations interface {
	KeyAuthorization(ctx context.Context, token string) (string, error)
}

// ChallengeGroup serves GET /.well-known/acme-challenge/{token}: the key
// authorization as text/plain, or a plain 404 for an unknown token. No
// envelope: the CA reads the raw body.
func ChallengeGroup(src KeyAuthorizations) Group {
	return Group{Name: "challenges", Routes: []Route{{
		Method: http.MethodGet, Path: ChallengePath,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			ka, err := src.KeyAuthorization(r.Context(), r.PathValue("token"))
			switch {
			case apperr.CodeOf(err) == apperr.NotFound:
				http.Error(w, "not found", http.StatusNotFound)
				return
			case err != nil:
				LoggerFrom(r.Context()).Error("http-01: read token", "err", err)
				http.Error(w, "unavailable", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, ka)
		}),
	}}}
}
