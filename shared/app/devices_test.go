package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/identity"
)

// deviceClient talks to a local server as the cert-ctrl agent and its
// user's browser do.
type deviceClient struct {
	t    *testing.T
	base string
}

type deviceReply struct {
	Status int
	Data   map[string]any
	Error  *struct {
		Code   int
		What   string
		Key    string
		Params map[string]any
	}
	raw map[string]json.RawMessage
}

// do sends body as JSON; auth is "cookie:<session>", "bearer:<token>" or "".
func (c deviceClient) do(method, path, auth string, body any) deviceReply {
	c.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	switch kind, v, _ := strings.Cut(auth, ":"); kind {
	case "cookie":
		req.AddCookie(&http.Cookie{Name: "cjj365", Value: v})
	case "bearer":
		req.Header.Set("Authorization", "Bearer "+v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := deviceReply{Status: resp.StatusCode}
	_ = json.Unmarshal(raw, &r.raw)
	_ = json.Unmarshal(raw, &r)
	return r
}

func (r deviceReply) str(t *testing.T, path ...string) string {
	t.Helper()
	var v any = r.Data
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %v in %+v", path, r.Data)
		}
		v = m[p]
	}
	return fmt.Sprint(v)
}

// TestDeviceOnboardingScenarios runs the cert-ctrl device protocol's
// acceptance scenarios 1-8 (§7) against the local server over HTTP.
func TestDeviceOnboardingScenarios(t *testing.T) {
	ctx := context.Background()
	a, err := app.Local(ctx, localConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	c := deviceClient{t: t, base: srv.URL}
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "dev@example.com", Password: "Device1Owner", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := a.Identity.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	cookie := "cookie:" + sess.Token

	// 1. device_start.
	start := c.do("POST", "/auth/device", "", map[string]any{"action": "device_start", "scopes": []string{"openid", "profile", "email"}, "interval": 5, "expires_in": 900})
	if start.Status != 200 || !regexp.MustCompile(`^[A-Z0-9]{4}-[A-Z0-9]{4}$`).MatchString(start.str(t, "user_code")) ||
		start.str(t, "device_code") == "" || !strings.HasPrefix(start.str(t, "verification_uri_complete"), start.str(t, "verification_uri")) ||
		start.Data["interval"].(float64) <= 0 || start.Data["expires_in"].(float64) <= 0 {
		t.Fatalf("device_start: %d %+v", start.Status, start.Data)
	}
	deviceCode, userCode := start.str(t, "device_code"), start.str(t, "user_code")

	// 2. Pending until the signed-in user approves, then ready with a
	// registration code and no tokens.
	if p := c.do("POST", "/auth/device", "", map[string]any{"action": "device_poll", "device_code": deviceCode}); p.Status != 200 || p.str(t, "status") != "authorization_pending" {
		t.Fatalf("poll before approval: %d %+v", p.Status, p.Data)
	}
	if v := c.do("POST", "/auth/device", "", map[string]any{"action": "device_verify", "user_code": userCode, "approve": true}); v.Status != 401 {
		t.Fatalf("device_verify without a session: %d", v.Status)
	}
	if v := c.do("POST", "/auth/device", cookie, map[string]any{"action": "device_verify", "user_code": userCode, "approve": true}); v.Status != 200 || v.str(t, "status") != "approved" {
		t.Fatalf("device_verify: %d %+v", v.Status, v.Data)
	}
	var ready deviceReply
	for range 3 { // a poll sooner than half the interval is slow_down
		if ready = c.do("POST", "/auth/device", "", map[string]any{"action": "device_poll", "device_code": deviceCode}); ready.str(t, "status") != "slow_down" {
			break
		}
	}
	code := ready.str(t, "registration_code")
	if ready.Status != 200 || ready.str(t, "status") != "ready" || ready.str(t, "user_id") != fmt.Sprint(u.ID) ||
		!strings.HasPrefix(code, "rc_") || ready.Data["access_token"] != nil {
		t.Fatalf("poll after approval: %d %+v", ready.Status, ready.Data)
	}

	// 3. Invalid action, missing or unknown device code: an error, no data.
	for _, body := range []map[string]any{{"action": "device_dance"}, {"action": "device_poll"}, {"action": "device_poll", "device_code": "nope"}} {
		if r := c.do("POST", "/auth/device", "", body); r.Status < 400 || r.raw["data"] != nil || r.Error == nil {
			t.Errorf("%v: %d %s", body, r.Status, r.raw)
		}
	}

	// 4. Registration with the code: device and session; the JWT's
	// device_id is the device's id.
	pk := base64.StdEncoding.EncodeToString(make([]byte, 32))
	const publicID = "3d96fbe3-2f11-4061-bfae-27e0e6c5d023"
	reg := map[string]any{"user_id": u.ID, "registration_code": code, "device_public_id": publicID, "dev_pk": pk,
		"platform": "linux", "model": "x86_64", "app_version": "1.4.2", "name": "CLI Device web1", "ip": "10.0.0.5", "user_agent": "cert-ctrl/1.4.2"}
	r := c.do("POST", "/apiv1/device/registration", "", reg)
	deviceID := r.str(t, "device", "id")
	access, refresh := r.str(t, "session", "access_token"), r.str(t, "session", "refresh_token")
	if r.Status/100 != 2 || r.str(t, "device", "status") != "ACTIVE" || r.str(t, "session", "token_type") != "Bearer" || access == "" || refresh == "" {
		t.Fatalf("registration: %d %+v", r.Status, r.Data)
	}
	claims := jwtClaims(t, access)
	if fmt.Sprint(claims["device_id"]) != deviceID || claims["exp"] == nil {
		t.Fatalf("access token claims %v, device %s", claims, deviceID)
	}

	// 5. The consumed code again, a short key, no key: refused.
	if r := c.do("POST", "/apiv1/device/registration", "", reg); r.Status/100 != 4 {
		t.Errorf("a consumed code: %d", r.Status)
	}
	for _, key := range []any{base64.StdEncoding.EncodeToString(make([]byte, 31)), nil} {
		bad := map[string]any{"user_id": u.ID, "registration_code": newRegistrationCode(t, c, cookie), "device_public_id": publicID, "dev_pk": key}
		if r := c.do("POST", "/apiv1/device/registration", "", bad); r.Status != 400 || r.Error == nil || r.Error.Params["field"] != "dev_pk" {
			t.Errorf("dev_pk %v: %d %+v", key, r.Status, r.Error)
		}
	}

	// 6. A new auth cycle of the same device, and a short-window retry with
	// its refresh token: new tokens, still one device.
	reg["registration_code"] = newRegistrationCode(t, c, cookie)
	again := c.do("POST", "/apiv1/device/registration", "", reg)
	if again.Status/100 != 2 || again.str(t, "device", "id") != deviceID || again.str(t, "session", "access_token") == access {
		t.Fatalf("re-registration: %d %+v", again.Status, again.Data)
	}
	retry := map[string]any{"user_id": u.ID, "refresh_token": again.str(t, "session", "refresh_token"), "device_public_id": publicID, "dev_pk": pk}
	retried := c.do("POST", "/apiv1/device/registration", "", retry)
	if retried.Status/100 != 2 || retried.str(t, "device", "id") != deviceID {
		t.Fatalf("retry with the refresh token: %d %+v %+v", retried.Status, retried.Data, retried.Error)
	}
	list := c.do("GET", fmt.Sprintf("/apiv1/users/%d/devices", u.ID), cookie, nil)
	if list.Status != 200 || strings.Count(string(list.raw["data"]), `"device_public_id"`) != 1 {
		t.Fatalf("devices after re-registration: %s", list.raw["data"])
	}

	// 7. API-key registration on both paths.
	_, key, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "agent",
		Permissions: []identity.Permission{{ObType: "ForDeviceAuthenticate", ObID: "*", Actions: []string{"authenticate", "validate", "revoke"}}}})
	if err != nil {
		t.Fatal(err)
	}
	var otherRefresh string
	for i, path := range []string{"/apiv1/me/devices", fmt.Sprintf("/apiv1/users/%d/devices", u.ID)} {
		body := map[string]any{"device_public_id": fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i+1), "dev_pk": pk, "name": "by key"}
		r := c.do("POST", path, "bearer:"+key, body)
		if r.Status/100 != 2 || r.str(t, "device", "id") == "" || r.str(t, "session", "access_token") == "" {
			t.Fatalf("API-key registration on %s: %d %+v %+v", path, r.Status, r.Data, r.Error)
		}
		otherRefresh = r.str(t, "session", "refresh_token")
	}
	if list := c.do("GET", "/apiv1/me/devices", cookie, nil); strings.Count(string(list.raw["data"]), `"device_public_id"`) != 3 {
		t.Fatalf("devices after API-key registrations: %s", list.raw["data"])
	}

	// 8. Refresh rotates (the first registration's session is still live);
	// the old refresh token again is 401 code 10003.
	rt := c.do("POST", "/auth/refresh", "", map[string]any{"refresh_token": refresh})
	if rt.Status != 200 || rt.str(t, "session", "refresh_token") == refresh || rt.str(t, "session", "access_token") == "" {
		t.Fatalf("refresh: %d %+v", rt.Status, rt.Data)
	}
	if reused := c.do("POST", "/auth/refresh", "", map[string]any{"refresh_token": refresh}); reused.Status != 401 || reused.Error == nil || reused.Error.Code != 10003 {
		t.Fatalf("reused refresh token: %d %+v", reused.Status, reused.Error)
	}

	// Deleting the device revokes its refresh tokens.
	if r := c.do("DELETE", "/apiv1/me/devices/"+deviceID, cookie, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
	if r := c.do("POST", "/auth/refresh", "", map[string]any{"refresh_token": retried.str(t, "session", "refresh_token")}); r.Status != 401 {
		t.Fatalf("refresh of a deleted device: %d", r.Status)
	}
	if r := c.do("POST", "/auth/refresh", "", map[string]any{"refresh_token": otherRefresh}); r.Status != 200 {
		t.Fatalf("refresh of another device after the delete: %d", r.Status)
	}
}

// newRegistrationCode runs a whole grant for the signed-in user.
func newRegistrationCode(t *testing.T, c deviceClient, cookie string) string {
	t.Helper()
	s := c.do("POST", "/auth/device", "", map[string]any{"action": "device_start"})
	c.do("POST", "/auth/device", cookie, map[string]any{"action": "device_verify", "user_code": s.str(t, "user_code"), "approve": true})
	r := c.do("POST", "/auth/device", "", map[string]any{"action": "device_poll", "device_code": s.str(t, "device_code")})
	if r.str(t, "status") != "ready" {
		t.Fatalf("grant: %+v", r.Data)
	}
	return r.str(t, "registration_code")
}

// jwtClaims decodes a JWT's claims without verifying it, as the agent does.
func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}
