package certctrl_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/passkey"
	"github.com/certfleet/certfleet/shared/identity/passkey/passkeytest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
)

// wantField checks a 400 that names the field.
func (e *env) wantField(r reply, field string) {
	e.t.Helper()
	e.want(r, http.StatusBadRequest, "")
	if r.Error == nil || r.Error.Params["field"] != field {
		e.t.Fatalf("error %s does not name %s", r.Body, field)
	}
}

const verifyFailed = "passkey verification failed"

// user makes an active account and logs it in with its password.
func (e *env) user(email string) (session string, u identity.User) {
	e.t.Helper()
	u, err := e.ids.Register(context.Background(), identity.Registration{Email: email, Password: "Correct1Horse", Active: true})
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.do("POST", "/auth/general", `{"action":"login","email":"`+email+`","password":"Correct1Horse"}`, "")
	e.want(r, 200, "")
	return sessionCookie(e.t, r), u
}

// ceremony is the data of an options route.
type ceremony struct {
	CeremonyID string          `json:"ceremony_id"`
	Options    json.RawMessage `json:"options"`
}

func (e *env) options(path, body, session string) ceremony {
	e.t.Helper()
	r := e.do("POST", path, body, session)
	e.want(r, 200, "")
	var c ceremony
	if err := json.Unmarshal(r.Data, &c); err != nil || c.CeremonyID == "" || len(c.Options) == 0 {
		e.t.Fatalf("options: %s", r.Body)
	}
	return c
}

func verifyBody(ceremonyID string, credential []byte) string {
	b, _ := json.Marshal(map[string]any{"ceremony_id": ceremonyID, "credential": json.RawMessage(credential)})
	return string(b)
}

// register adds a passkey on a to the session's user over HTTP.
func (e *env) register(session string, a *passkeytest.Authenticator) passkey.Credential {
	e.t.Helper()
	c := e.options("/auth/webauthn/register/options", "", session)
	resp, _, err := a.Create(c.Options, passkeytest.Tweaks{})
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.do("POST", "/auth/webauthn/register/verify", verifyBody(c.CeremonyID, resp), session)
	e.want(r, http.StatusCreated, "")
	var cred passkey.Credential
	if err := json.Unmarshal(r.Data, &cred); err != nil {
		e.t.Fatal(err)
	}
	return cred
}

// login runs a passkey login over HTTP (by email, or discoverable for "").
func (e *env) login(email string, a *passkeytest.Authenticator, tw passkeytest.Tweaks) reply {
	e.t.Helper()
	body := ""
	if email != "" {
		body = `{"email":"` + email + `"}`
	}
	c := e.options("/auth/webauthn/login/options", body, "")
	resp, err := a.Get(c.Options, tw)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do("POST", "/auth/webauthn/login/verify", verifyBody(c.CeremonyID, resp), "")
}

func TestWebAuthnRegisterListAndLogin(t *testing.T) {
	e := newEnv(t, 1000)
	session, u := e.user("alice@example.com")
	a := passkeytest.New(testenv.PublicURL)

	cred := e.register(session, a)
	if cred.ID != a.Credentials()[0].IDString() {
		t.Fatalf("registered %+v", cred)
	}
	r := e.do("GET", "/auth/webauthn/credentials", "", session)
	e.want(r, 200, "")
	var list []passkey.Credential
	if err := json.Unmarshal(r.Data, &list); err != nil || len(list) != 1 || list[0].ID != cred.ID {
		t.Fatalf("credentials: %s", r.Body)
	}

	for _, email := range []string{"alice@example.com", ""} {
		r := e.login(email, a, passkeytest.Tweaks{})
		e.want(r, 200, "")
		var data struct {
			User    identity.User
			Session struct {
				ExpiresAt time.Time `json:"expires_at"`
			}
		}
		if err := json.Unmarshal(r.Data, &data); err != nil || data.User.ID != u.ID || data.Session.ExpiresAt.IsZero() {
			t.Fatalf("login %q: %s", email, r.Body)
		}
		var cookie *http.Cookie
		for _, c := range (&http.Response{Header: r.Header}).Cookies() {
			cookie = c
		}
		if cookie == nil || cookie.Name != "cjj365" || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
			t.Fatalf("login %q cookie %+v", email, cookie)
		}
		p := e.do("GET", "/auth/profile", "", cookie.Value)
		if p.Status != 200 || !strings.Contains(string(p.Data), `"email":"alice@example.com"`) {
			t.Fatalf("profile with the passkey session: %s", p.Body)
		}
	}
}

func TestWebAuthnRejects(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.user("bob@example.com")
	a := passkeytest.New(testenv.PublicURL)

	// Registration answers that must fail.
	for name, tw := range map[string]passkeytest.Tweaks{
		"wrong origin":    {Origin: "https://evil.example"},
		"wrong rpId":      {RPID: "evil.example"},
		"wrong challenge": {Challenge: []byte("0123456789abcdef0123456789abcdef")},
	} {
		c := e.options("/auth/webauthn/register/options", "", session)
		resp, _, err := passkeytest.New(testenv.PublicURL).Create(c.Options, tw)
		if err != nil {
			t.Fatal(err)
		}
		r := e.do("POST", "/auth/webauthn/register/verify", verifyBody(c.CeremonyID, resp), session)
		if r.Status != 401 || r.Error.What != verifyFailed {
			t.Fatalf("registration with %s: %s", name, r.Body)
		}
	}
	e.register(session, a)

	// Login answers that must fail, and set no cookie.
	for name, tw := range map[string]passkeytest.Tweaks{
		"wrong origin":       {Origin: "https://evil.example"},
		"wrong rpId":         {RPID: "evil.example"},
		"wrong challenge":    {Challenge: []byte("0123456789abcdef0123456789abcdef")},
		"tampered signature": {BadSignature: true},
	} {
		for _, email := range []string{"bob@example.com", ""} {
			r := e.login(email, a, tw)
			if r.Status != 401 || r.Error.What != verifyFailed || r.Header.Get("Set-Cookie") != "" {
				t.Fatalf("login %q with %s: %d %s", email, name, r.Status, r.Body)
			}
		}
	}

	// A replayed ceremony id: the first answer logs in, the same again not.
	c := e.options("/auth/webauthn/login/options", `{"email":"bob@example.com"}`, "")
	resp, err := a.Get(c.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/auth/webauthn/login/verify", verifyBody(c.CeremonyID, resp), ""), 200, "")
	e.wantField(e.do("POST", "/auth/webauthn/login/verify", verifyBody(c.CeremonyID, resp), ""), "ceremony_id")

	// A sign counter going backwards: a cloned authenticator.
	back := uint32(1)
	r := e.login("", a, passkeytest.Tweaks{Counter: &back})
	e.want(r, 401, verifyFailed)

	// Malformed bodies name their field.
	e.wantField(e.do("POST", "/auth/webauthn/login/verify", `{"credential":{}}`, ""), "ceremony_id")
	e.wantField(e.do("POST", "/auth/webauthn/login/verify", `{"ceremony_id":"x"}`, ""), "credential")
	e.wantField(e.do("POST", "/auth/webauthn/login/verify", verifyBody("unknown", resp), ""), "ceremony_id")
	e.want(e.do("POST", "/auth/webauthn/login/options", `{"email":1}`, ""), 400, "")

	// An expired ceremony.
	c = e.options("/auth/webauthn/login/options", "", "")
	resp, _ = a.Get(c.Options, passkeytest.Tweaks{})
	e.clock.Advance(passkey.CeremonyTTL + time.Second)
	e.wantField(e.do("POST", "/auth/webauthn/login/verify", verifyBody(c.CeremonyID, resp), ""), "ceremony_id")
}

func TestWebAuthnRoutesNeedASession(t *testing.T) {
	e := newEnv(t, 1000)
	session, u := e.user("carol@example.com")
	for _, rt := range []struct{ method, path string }{
		{"POST", "/auth/webauthn/register/options"},
		{"POST", "/auth/webauthn/register/verify"},
		{"POST", "/auth/webauthn/step-up/options"},
		{"POST", "/auth/webauthn/step-up/verify"},
		{"GET", "/auth/webauthn/credentials"},
		{"DELETE", "/auth/webauthn/credentials/AAAA"},
	} {
		e.want(e.do(rt.method, rt.path, "", ""), 401, "")
		e.want(e.do(rt.method, rt.path, "", "not-a-session"), 401, "")
	}
	// An API key of the user is refused too.
	_, token, err := e.ids.CreateAPIKey(context.Background(), u.ID, identity.NewAPIKey{Name: "ci",
		Permissions: []identity.Permission{{ObType: "certificates", ObID: "*", Actions: []string{"read"}}}})
	if err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/auth/webauthn/register/options", "", token), 403, "")
	e.want(e.do("GET", "/auth/webauthn/credentials", "", token), 403, "")
	// After logout the session registers nothing.
	e.want(e.do("POST", "/auth/logout", "", session), 200, "")
	e.want(e.do("POST", "/auth/webauthn/register/options", "", session), 401, "")
}

func TestWebAuthnCredentialsAreTheirOwners(t *testing.T) {
	e := newEnv(t, 1000)
	alice, _ := e.user("alice@example.com")
	mallory, _ := e.user("mallory@example.com")
	a := passkeytest.New(testenv.PublicURL)
	cred := e.register(alice, a)

	r := e.do("GET", "/auth/webauthn/credentials", "", mallory)
	e.want(r, 200, "")
	if string(r.Data) != "[]" {
		t.Fatalf("mallory lists %s", r.Data)
	}
	e.want(e.do("DELETE", "/auth/webauthn/credentials/"+cred.ID, "", mallory), 404, "")
	// A registration ceremony of alice's cannot be finished by mallory.
	c := e.options("/auth/webauthn/register/options", "", alice)
	resp, _, err := passkeytest.New(testenv.PublicURL).Create(c.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	e.wantField(e.do("POST", "/auth/webauthn/register/verify", verifyBody(c.CeremonyID, resp), mallory), "ceremony_id")

	// Alice's passkey still logs her in; once she deletes it, it does not.
	e.want(e.login("", a, passkeytest.Tweaks{}), 200, "")
	e.want(e.do("DELETE", "/auth/webauthn/credentials/"+cred.ID, "", alice), 204, "")
	e.want(e.do("DELETE", "/auth/webauthn/credentials/"+cred.ID, "", alice), 404, "")
	r = e.do("GET", "/auth/webauthn/credentials", "", alice)
	if r.Status != 200 || string(r.Data) != "[]" {
		t.Fatalf("after delete: %s", r.Body)
	}
	e.want(e.login("", a, passkeytest.Tweaks{}), 401, verifyFailed)
}

func TestWebAuthnStepUp(t *testing.T) {
	e := newEnv(t, 1000)
	ctx := context.Background()
	s1, _ := e.user("dave@example.com")
	a := passkeytest.New(testenv.PublicURL)

	e.want(e.do("POST", "/auth/webauthn/step-up/options", "", s1), 400, "")
	e.register(s1, a)
	// A second session of the same user, logged in with the passkey.
	s2 := sessionCookie(t, e.login("dave@example.com", a, passkeytest.Tweaks{}))
	p1, err := e.ids.SessionPrincipal(ctx, s1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := e.ids.SessionPrincipal(ctx, s2)
	if err != nil {
		t.Fatal(err)
	}

	// A ceremony of session 1 does not serve session 2.
	c := e.options("/auth/webauthn/step-up/options", "", s1)
	resp, err := a.Get(c.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	e.wantField(e.do("POST", "/auth/webauthn/step-up/verify", verifyBody(c.CeremonyID, resp), s2), "ceremony_id")
	e.want(e.do("POST", "/auth/webauthn/step-up/verify", verifyBody(c.CeremonyID, resp), s1), 200, "")
	if !e.pk.StepUpValid(ctx, p1) {
		t.Fatal("no step-up after step-up/verify")
	}
	if e.pk.StepUpValid(ctx, p2) {
		t.Fatal("step-up of session 1 counts for session 2")
	}

	// A tampered step-up records nothing.
	c = e.options("/auth/webauthn/step-up/options", "", s2)
	resp, _ = a.Get(c.Options, passkeytest.Tweaks{BadSignature: true})
	e.want(e.do("POST", "/auth/webauthn/step-up/verify", verifyBody(c.CeremonyID, resp), s2), 401, verifyFailed)
	if e.pk.StepUpValid(ctx, p2) {
		t.Fatal("a failed step-up counts")
	}

	e.clock.Advance(passkey.StepUpTTL + time.Second)
	if e.pk.StepUpValid(ctx, p1) {
		t.Fatal("step-up still valid after 10 minutes")
	}
}
