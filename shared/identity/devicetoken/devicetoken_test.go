package devicetoken_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/local"
	"github.com/certfleet/certfleet/shared/store"
	"github.com/certfleet/certfleet/shared/store/bolt"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts at the current second: the store expires items by its
// own (wall) clock, so test time must not lie far in the past.
func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rig is the real backends a Service runs on in tests: a bbolt store and
// an envelope sealer over a local master key file.
type rig struct {
	dbPath  string
	keyPath string
	st      *bolt.Store
	closeDB func() error
	sealer  keys.Sealer
	clock   *clock
}

func newRig(t testing.TB) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{dbPath: filepath.Join(dir, "data.db"), keyPath: filepath.Join(dir, "master.key"), clock: newClock()}
	db, err := bolt.OpenDB(r.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	r.st, r.closeDB = bolt.New(db), db.Close
	t.Cleanup(func() { _ = db.Close() })
	r.sealer = sealerAt(t, r.keyPath)
	return r
}

func sealerAt(t testing.TB, path string) keys.Sealer {
	t.Helper()
	w, err := local.Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	return keys.NewEnvelope(w)
}

func (r *rig) service(cfg devicetoken.Config) *devicetoken.Service {
	if cfg.Now == nil {
		cfg.Now = r.clock.Now
	}
	return devicetoken.New(r.st, r.sealer, cfg)
}

func wantCode(t *testing.T, err error, code apperr.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("error %v (%T): want an *apperr.Error with code %s", err, err, code)
	}
}

// segments decodes a JWT's header and payload with numbers kept as
// json.Number.
func segments(t *testing.T, tok string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	decode := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("segment is not base64url: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		m := map[string]any{}
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	return decode(parts[0]), decode(parts[1])
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	now := r.clock.Now()

	tok, err := svc.Issue(ctx, 123, 42)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 3600 || tok.AccessToken == "" || !strings.HasPrefix(tok.RefreshToken, "rt_") {
		t.Fatalf("tokens = %+v", tok)
	}

	c, err := svc.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != 123 || c.UserID != 42 || c.Subject != "device:123" || c.ID == "" || c.KeyID == "" {
		t.Fatalf("claims = %+v", c)
	}
	if !c.IssuedAt.Equal(now) || !c.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("iat %v exp %v, want %v and +1h", c.IssuedAt, c.ExpiresAt, now)
	}
	d, u, err := svc.VerifyDevice(ctx, tok.AccessToken)
	if err != nil || d != 123 || u != 42 {
		t.Fatalf("VerifyDevice = %d, %d, %v", d, u, err)
	}

	// What the agent decodes without verifying: numeric device_id and exp.
	h, p := segments(t, tok.AccessToken)
	if h["alg"] != "EdDSA" || h["kid"] != c.KeyID || h["typ"] != "JWT" {
		t.Fatalf("header = %v", h)
	}
	if n, ok := p["device_id"].(json.Number); !ok || n.String() != "123" {
		t.Fatalf("device_id = %#v, want the JSON number 123", p["device_id"])
	}
	if n, ok := p["user_id"].(json.Number); !ok || n.String() != "42" {
		t.Fatalf("user_id = %#v, want the JSON number 42", p["user_id"])
	}
	if n, ok := p["exp"].(json.Number); !ok || n.String() != jsonInt(now.Add(time.Hour).Unix()) {
		t.Fatalf("exp = %#v", p["exp"])
	}
	if p["iss"] != "certfleet" || p["sub"] != "device:123" || p["jti"] == nil || p["iat"] == nil {
		t.Fatalf("payload = %v", p)
	}
	if aud := p["aud"]; aud != "certfleet-device" && !(isList(aud) && aud.([]any)[0] == "certfleet-device") {
		t.Fatalf("aud = %v", aud)
	}

	// The session object as the agent reads data.session.
	b, _ := json.Marshal(tok)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"access_token", "refresh_token", "token_type", "expires_in"} {
		if _, ok := m[k]; !ok {
			t.Errorf("session JSON %s lacks %q", b, k)
		}
	}

	// Two issues never share a jti or a refresh token.
	tok2, err := svc.Issue(ctx, 123, 42)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := svc.Verify(ctx, tok2.AccessToken)
	if c2.ID == c.ID || tok2.RefreshToken == tok.RefreshToken {
		t.Fatal("two issues share a jti or refresh token")
	}
}

func isList(v any) bool { _, ok := v.([]any); return ok }

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestIssueRejectsBadIDs(t *testing.T) {
	svc := newRig(t).service(devicetoken.Config{})
	for _, ids := range [][2]int64{{0, 1}, {1, 0}, {-1, 1}} {
		_, err := svc.Issue(context.Background(), ids[0], ids[1])
		wantCode(t, err, apperr.Invalid)
	}
}

func TestConfigOverrides(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{Issuer: "me", Audience: "them", AccessTTL: 15 * time.Minute})
	tok, err := svc.Issue(ctx, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 900 {
		t.Fatalf("expires_in = %d", tok.ExpiresIn)
	}
	if _, err := svc.Verify(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	// A service with the default issuer and audience over the same key
	// does not accept it.
	_, err = r.service(devicetoken.Config{}).Verify(ctx, tok.AccessToken)
	wantCode(t, err, apperr.Unauthorized)
}

// forge signs claims with any method and key, with the given kid ("" for
// none).
func forge(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("forge %s: %v", m.Alg(), err)
	}
	return s
}

func TestVerifyRejects(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	good, err := svc.Issue(ctx, 7, 9)
	if err != nil {
		t.Fatal(err)
	}
	kid, priv, err := devicetoken.SigningKeyForTest(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	now := r.clock.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": "certfleet", "aud": "certfleet-device", "sub": "device:7",
			"device_id": 7, "user_id": 9, "jti": "j1",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}
		if edit != nil {
			edit(c)
		}
		return c
	}

	// The forging helper makes acceptable tokens when nothing is wrong,
	// so every rejection below is about the one thing each case changes.
	if _, err := svc.Verify(ctx, forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(nil))); err != nil {
		t.Fatalf("control token rejected: %v", err)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)

	tampered := func() string {
		parts := strings.Split(good.AccessToken, ".")
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		m["device_id"], m["sub"] = 8, "device:8"
		b, _ = json.Marshal(m)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}()
	noneTok := forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims(nil))
	lateSvc := r.service(devicetoken.Config{Now: func() time.Time { return now.Add(time.Hour + devicetoken.Leeway + time.Second) }})

	cases := []struct {
		name  string
		token string
		svc   *devicetoken.Service
		msg   string
	}{
		{name: "alg none", token: noneTok},
		{name: "alg none with empty signature stripped", token: strings.TrimSuffix(noneTok, ".") + "."},
		{name: "HS256 keyed with the Ed25519 public key", token: forge(t, jwt.SigningMethodHS256, []byte(pub), kid, claims(nil))},
		{name: "HS256 keyed with the base64 public key", token: forge(t, jwt.SigningMethodHS256, []byte(base64.StdEncoding.EncodeToString(pub)), kid, claims(nil))},
		{name: "RS256", token: forge(t, jwt.SigningMethodRS256, rsaKey, kid, claims(nil))},
		{name: "ES256", token: forge(t, jwt.SigningMethodES256, ecKey, kid, claims(nil))},
		{name: "missing exp", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { delete(c, "exp") }))},
		{name: "expired", token: good.AccessToken, svc: lateSvc, msg: "access token has expired"},
		{name: "expired forged", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }))},
		{name: "wrong aud", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" }))},
		{name: "missing aud", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { delete(c, "aud") }))},
		{name: "wrong iss", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["iss"] = "evil" }))},
		{name: "iat in the future", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }))},
		{name: "missing iat", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { delete(c, "iat") }))},
		{name: "missing device_id", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { delete(c, "device_id") }))},
		{name: "string device_id", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["device_id"] = "7" }))},
		{name: "sub not the device", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { c["sub"] = "device:8" }))},
		{name: "missing jti", token: forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(func(c jwt.MapClaims) { delete(c, "jti") }))},
		{name: "unknown kid", token: forge(t, jwt.SigningMethodEdDSA, priv, "no-such-kid", claims(nil))},
		{name: "no kid", token: forge(t, jwt.SigningMethodEdDSA, priv, "", claims(nil))},
		{name: "tampered payload", token: tampered},
		{name: "other Ed25519 key, same kid", token: forge(t, jwt.SigningMethodEdDSA, otherPriv, kid, claims(nil))},
		{name: "signature of another token", token: strings.Join(append(strings.Split(forge(t, jwt.SigningMethodEdDSA, priv, kid, claims(nil)), ".")[:2], strings.Split(good.AccessToken, ".")[2]), ".")},
		{name: "garbage", token: "not a token at all"},
		{name: "garbage three segments", token: "a.b.c"},
		{name: "empty", token: ""},
		{name: "oversized", token: good.AccessToken + strings.Repeat("A", devicetoken.MaxTokenBytes)},
		{name: "refresh token as access token", token: good.RefreshToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := svc
			if tc.svc != nil {
				v = tc.svc
			}
			_, err := v.Verify(ctx, tc.token)
			wantCode(t, err, apperr.Unauthorized)
			msg := apperr.MessageOf(err)
			if tc.msg != "" && msg != tc.msg {
				t.Errorf("message %q, want %q", msg, tc.msg)
			}
			for i, part := range strings.Split(tc.token, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q echoes segment %d of the token", err, i)
				}
			}
			if _, _, err := v.VerifyDevice(ctx, tc.token); apperr.CodeOf(err) != apperr.Unauthorized {
				t.Errorf("VerifyDevice: %v", err)
			}
		})
	}

	// Inside the leeway an expired token still passes.
	within := r.service(devicetoken.Config{Now: func() time.Time { return now.Add(time.Hour + devicetoken.Leeway - time.Second) }})
	if _, err := within.Verify(ctx, good.AccessToken); err != nil {
		t.Fatalf("token inside the leeway: %v", err)
	}
}

func TestVerifyBeforeAnyKeyExists(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	_, err := r.service(devicetoken.Config{}).Verify(ctx, "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.e30.AAAA")
	wantCode(t, err, apperr.Unauthorized)
	// Verify does not create the key.
	if _, err := r.st.Get(ctx, devicetoken.KeyItem); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("signing key after Verify: %v", err)
	}
}
