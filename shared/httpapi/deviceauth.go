package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
)

// DeviceVerifier checks a device access token (the JWT the cert-ctrl agent
// sends as a Bearer token) and returns whose it is. A rejected token is an
// *apperr.Error with code Unauthorized; any other error is a failure of the
// verifier itself (shown as 500). *devicetoken.Service implements it.
type DeviceVerifier interface {
	VerifyDevice(ctx context.Context, token string) (deviceID, userID int64, err error)
}

type deviceCtxKey struct{}

type deviceIdentity struct{ deviceID, userID int64 }

// ContextWithDevice returns ctx carrying an authenticated device, as
// DeviceAuth does; handler tests use it to skip token handling.
func ContextWithDevice(ctx context.Context, deviceID, userID int64) context.Context {
	return context.WithValue(ctx, deviceCtxKey{}, deviceIdentity{deviceID, userID})
}

// DeviceFromContext returns the device that DeviceAuth authenticated for
// this request; ok is false outside DeviceAuth.
func DeviceFromContext(ctx context.Context) (deviceID, userID int64, ok bool) {
	d, ok := ctx.Value(deviceCtxKey{}).(deviceIdentity)
	return d.deviceID, d.userID, ok
}

// DeviceAuth lets a request through to next only with a valid device access
// token in "Authorization: Bearer <jwt>", and puts the token's device and
// user ids in the request context (DeviceFromContext). A missing, malformed
// or rejected token is answered 401 in the envelope (code 5018) with a
// WWW-Authenticate challenge; the agent then refreshes and retries once.
func DeviceAuth(v DeviceVerifier, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r.Header.Values("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="certfleet"`)
			WriteError(w, r, apperr.New(apperr.Unauthorized, "missing or malformed Authorization header: want \"Bearer <access token>\""))
			return
		}
		deviceID, userID, err := v.VerifyDevice(r.Context(), token)
		if err == nil && (deviceID <= 0 || userID <= 0) {
			err = apperr.New(apperr.Unauthorized, "access token is invalid")
		}
		if err != nil {
			if apperr.CodeOf(err) == apperr.Unauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="certfleet", error="invalid_token"`)
			}
			WriteError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(ContextWithDevice(r.Context(), deviceID, userID)))
	})
}

// bearerToken extracts the token from exactly one Authorization header of
// the form "Bearer <token>" (scheme case-insensitive, RFC 7235).
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || strings.ContainsAny(token, " \t,") {
		return "", false
	}
	return token, true
}

// The cert-ctrl agent's signal that a refresh token was reused (protocol
// §1.4): it stops refreshing and asks the operator to log in again.
const (
	RefreshRotatedCode = 10003
	RefreshRotatedKey  = "refresh_token_rotated"
)

// WriteRefreshRotated answers a refresh with a rotated or revoked refresh
// token (devicetoken.ErrRefreshRotated): 401 with error.code 10003, error.key
// "refresh_token_rotated" and a message that contains "rotated". The
// /auth/refresh handler calls it when errors.Is(err,
// devicetoken.ErrRefreshRotated); err supplies the message.
func WriteRefreshRotated(w http.ResponseWriter, r *http.Request, err error) {
	what := "refresh token was already rotated; sign in again"
	if err != nil && apperr.CodeOf(err) == apperr.Unauthorized {
		if m := apperr.MessageOf(err); strings.Contains(m, "rotated") {
			what = m
		}
	}
	writeJSON(w, http.StatusUnauthorized, struct {
		Error ErrorBody `json:"error"`
	}{ErrorBody{Code: RefreshRotatedCode, What: what, Key: RefreshRotatedKey}})
}
