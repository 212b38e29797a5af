package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/local"
	"github.com/certfleet/certfleet/shared/store/bolt"
)

var _ httpapi.DeviceVerifier = (*devicetoken.Service)(nil)

func tokenService(t *testing.T) *devicetoken.Service {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.OpenDB(filepath.Join(dir, "data.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	w, err := local.Open(filepath.Join(dir, "master.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	return devicetoken.New(bolt.New(db), keys.NewEnvelope(w), devicetoken.Config{})
}

// deviceServer is DeviceAuth over a handler that reports the context's
// device, behind the shared middleware.
func deviceServer(v httpapi.DeviceVerifier) (http.Handler, *int) {
	calls := new(int)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*calls++
		d, u, ok := httpapi.DeviceFromContext(r.Context())
		httpapi.WriteData(w, http.StatusOK, map[string]any{"device_id": d, "user_id": u, "ok": ok})
	})
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	return httpapi.Wrap(httpapi.DeviceAuth(v, next), log), calls
}

func get(h http.Handler, auth ...string) (*httptest.ResponseRecorder, envelope) {
	req := httptest.NewRequest(http.MethodGet, "/apiv1/devices/self/updates", nil)
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var env envelope
	_ = json.Unmarshal(rec.Body.Bytes(), &env)
	return rec, env
}

func TestDeviceAuthAcceptsAValidToken(t *testing.T) {
	svc := tokenService(t)
	tok, err := svc.Issue(context.Background(), 123, 42)
	if err != nil {
		t.Fatal(err)
	}
	h, calls := deviceServer(svc)
	for _, auth := range []string{"Bearer " + tok.AccessToken, "bearer " + tok.AccessToken, "Bearer   " + tok.AccessToken + " "} {
		rec, env := get(h, auth)
		if rec.Code != http.StatusOK || env.Error != nil {
			t.Fatalf("%q: status %d body %s", auth[:10], rec.Code, rec.Body)
		}
		var got struct {
			DeviceID int64 `json:"device_id"`
			UserID   int64 `json:"user_id"`
			OK       bool  `json:"ok"`
		}
		if err := json.Unmarshal(env.Data, &got); err != nil {
			t.Fatal(err)
		}
		if got.DeviceID != 123 || got.UserID != 42 || !got.OK {
			t.Fatalf("handler saw %+v", got)
		}
	}
	if *calls != 3 {
		t.Fatalf("next called %d times", *calls)
	}
}

func TestDeviceAuthRejects(t *testing.T) {
	svc := tokenService(t)
	tok, err := svc.Issue(context.Background(), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	h, calls := deviceServer(svc)
	cases := map[string][]string{
		"missing header":     nil,
		"empty header":       {""},
		"wrong scheme":       {"Basic " + tok.AccessToken},
		"api key scheme":     {"Token " + tok.AccessToken},
		"scheme only":        {"Bearer"},
		"scheme and spaces":  {"Bearer    "},
		"token without":      {tok.AccessToken},
		"two tokens":         {"Bearer " + tok.AccessToken + " " + tok.AccessToken},
		"two headers":        {"Bearer " + tok.AccessToken, "Bearer " + tok.AccessToken},
		"bad token":          {"Bearer not.a.jwt"},
		"refresh as access":  {"Bearer " + tok.RefreshToken},
		"tampered signature": {"Bearer " + tok.AccessToken[:len(tok.AccessToken)-4] + "AAAA"},
	}
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			rec, env := get(h, auth...)
			wantError(t, rec, env, http.StatusUnauthorized, 5018, "")
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), tok.AccessToken[20:40]) {
				t.Errorf("body echoes the token: %s", rec.Body)
			}
		})
	}
	if *calls != 0 {
		t.Fatalf("next called %d times for rejected requests", *calls)
	}
}

type verifierFunc func(ctx context.Context, token string) (int64, int64, error)

func (f verifierFunc) VerifyDevice(ctx context.Context, token string) (int64, int64, error) {
	return f(ctx, token)
}

func TestDeviceAuthVerifierFailureIs500(t *testing.T) {
	h, calls := deviceServer(verifierFunc(func(context.Context, string) (int64, int64, error) {
		return 0, 0, errors.New("store unreachable at 10.0.0.1")
	}))
	rec, env := get(h, "Bearer x.y.z")
	wantError(t, rec, env, http.StatusInternalServerError, 5001, "internal error")
	if strings.Contains(rec.Body.String(), "10.0.0.1") || *calls != 0 {
		t.Fatalf("body %s, calls %d", rec.Body, *calls)
	}

	// A verifier that accepts without ids is not trusted either.
	h, calls = deviceServer(verifierFunc(func(context.Context, string) (int64, int64, error) { return 0, 0, nil }))
	rec, env = get(h, "Bearer x.y.z")
	wantError(t, rec, env, http.StatusUnauthorized, 5018, "")
	if *calls != 0 {
		t.Fatal("next called")
	}
}

func TestDeviceFromContext(t *testing.T) {
	if _, _, ok := httpapi.DeviceFromContext(context.Background()); ok {
		t.Fatal("device in an empty context")
	}
	d, u, ok := httpapi.DeviceFromContext(httpapi.ContextWithDevice(context.Background(), 5, 6))
	if d != 5 || u != 6 || !ok {
		t.Fatalf("got %d %d %v", d, u, ok)
	}
}

func TestWriteRefreshRotated(t *testing.T) {
	ctx := context.Background()
	svc := tokenService(t)
	tok, err := svc.Issue(ctx, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	// What an /auth/refresh handler does with the error of a reused token.
	refresh := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		s, err := svc.Refresh(r.Context(), body.RefreshToken)
		switch {
		case errors.Is(err, devicetoken.ErrRefreshRotated):
			httpapi.WriteRefreshRotated(w, r, err)
		case err != nil:
			httpapi.WriteError(w, r, err)
		default:
			httpapi.WriteData(w, http.StatusOK, map[string]any{"session": s})
		}
	})
	post := func(rt string) (*httptest.ResponseRecorder, envelope) {
		req := httptest.NewRequest(http.MethodPost, "/auth/refresh", strings.NewReader(`{"refresh_token":"`+rt+`"}`))
		rec := httptest.NewRecorder()
		refresh.ServeHTTP(rec, req)
		var env envelope
		_ = json.Unmarshal(rec.Body.Bytes(), &env)
		return rec, env
	}

	rec, env := post(tok.RefreshToken)
	wantError(t, rec, env, http.StatusUnauthorized, 10003, "rotated")
	if env.Error.Key != "refresh_token_rotated" {
		t.Fatalf("error.key = %q", env.Error.Key)
	}
	if strings.Contains(rec.Body.String(), `"data"`) {
		t.Fatalf("error body carries data: %s", rec.Body)
	}

	// An unknown token is a plain 401 without the key.
	rec, env = post("rt_unknown")
	wantError(t, rec, env, http.StatusUnauthorized, 5018, "")
	if env.Error.Key != "" {
		t.Fatalf("error.key = %q for an unknown token", env.Error.Key)
	}

	// Without a usable error it still says rotated.
	rec2 := httptest.NewRecorder()
	httpapi.WriteRefreshRotated(rec2, httptest.NewRequest(http.MethodPost, "/auth/refresh", nil), apperr.New(apperr.Internal, "x"))
	if rec2.Code != http.StatusUnauthorized || !strings.Contains(rec2.Body.String(), "rotated") {
		t.Fatalf("status %d body %s", rec2.Code, rec2.Body)
	}
}
