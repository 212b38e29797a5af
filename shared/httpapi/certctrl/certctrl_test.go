package certctrl_test

import (
	"encoding/json"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/identity/passkey"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// env is the auth route group over real parts: bbolt, the local master
// key, the mail outbox.
type env struct {
	testenv.Client
	t       *testing.T
	ids     *identity.Service
	devices *devicetoken.Service
	pk      *passkey.Service
	clock   *testenv.Clock
	outbox  string
}

type reply = testenv.Reply

func newEnv(t *testing.T, rateLimit int) *env {
	t.Helper()
	p := testenv.New(t)
	ids := p.Identity()
	pk, err := passkey.New(p.Store, ids, passkey.Config{RPID: "localhost", Origins: []string{testenv.PublicURL}, Now: p.Clock.Now, Log: p.Log})
	if err != nil {
		t.Fatal(err)
	}
	devices := devicetoken.New(p.Store, p.Sealer, devicetoken.Config{})
	guard := &httpapi.Guard{Auth: ids, Limiter: ratelimit.New(p.Store, "requests", rateLimit, time.Minute, nil), CookieName: "cjj365"}
	h := httpapi.Wrap(httpapi.NewRouter(certctrl.AuthGroup(certctrl.AuthDeps{Identity: ids, DeviceTokens: devices,
		Passkeys: pk, Guard: guard, Cookies: certctrl.Sessions{CookieName: "cjj365"}})), p.Log)
	return &env{Client: testenv.Client{T: t, Handler: h}, t: t, ids: ids, devices: devices, pk: pk, clock: p.Clock, outbox: p.OutboxDir}
}

// do sends a request; see testenv.Client.Do.
func (e *env) do(method, path, body, cred string) reply {
	e.t.Helper()
	return e.Do(method, path, body, cred)
}

func (e *env) want(r reply, status int, whatContains string) {
	e.t.Helper()
	if r.Status != status {
		e.t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if whatContains != "" && (r.Error == nil || !strings.Contains(r.Error.What, whatContains)) {
		e.t.Fatalf("error %s does not mention %q", r.Body, whatContains)
	}
}

// lastMail returns the newest mail's recipient and its action link.
func (e *env) lastMail() (to, link string) {
	e.t.Helper()
	files, _ := filepath.Glob(filepath.Join(e.outbox, "*.eml"))
	if len(files) == 0 {
		e.t.Fatal("no mail in the outbox")
	}
	slices.Sort(files)
	f, err := os.Open(files[len(files)-1])
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	m, err := mail.ReadMessage(f)
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(m.Body))
	link = regexp.MustCompile(`http://localhost:8080/auth/general\?action=[a-z-]+&token=[A-Za-z0-9_-]+`).FindString(string(body))
	if link == "" {
		e.t.Fatalf("no action link in the mail:\n%s", body)
	}
	addr, err := mail.ParseAddress(m.Header.Get("To"))
	if err != nil {
		e.t.Fatal(err)
	}
	return addr.Address, link
}

func sessionCookie(t *testing.T, r reply) string {
	t.Helper()
	c := r.Cookie("cjj365")
	if c == "" {
		t.Fatalf("no session cookie in %v", r.Header)
	}
	return c
}

const goodPassword = "Correct1Horse"

// registerActive registers and activates an account, and logs it in.
func (e *env) registerActive(email string) (session string, userID int64) {
	e.t.Helper()
	r := e.do("POST", "/auth/general", `{"action":"register","email":"`+email+`","password":"`+goodPassword+`"}`, "")
	e.want(r, 201, "")
	_, link := e.lastMail()
	e.want(e.do("GET", strings.TrimPrefix(link, "http://localhost:8080"), "", ""), 200, "")
	r = e.do("POST", "/auth/general", `{"action":"login","email":"`+email+`","password":"`+goodPassword+`"}`, "")
	e.want(r, 200, "")
	var data struct{ User identity.User }
	json.Unmarshal(r.Data, &data)
	return sessionCookie(e.t, r), data.User.ID
}

func TestRegisterActivateLoginExactlyAsSeed000(t *testing.T) {
	e := newEnv(t, 1000)
	r := e.do("POST", "/auth/general", `{"action":"register","email":"User@Example.com","password":"`+goodPassword+`","username":"user1"}`, "")
	e.want(r, 201, "")
	var reg struct{ User identity.User }
	json.Unmarshal(r.Data, &reg)
	if reg.User.ID != 1 || reg.User.Email != "user@example.com" || reg.User.Status != "pending" || strings.Contains(r.Body, "password") {
		t.Fatalf("registered %s", r.Body)
	}

	login := `{"action":"login","email":"user@example.com","password":"` + goodPassword + `"}`
	e.want(e.do("POST", "/auth/general", login, ""), 403, "not activated")

	to, link := e.lastMail()
	if to != "user@example.com" {
		t.Fatalf("activation mailed to %q", to)
	}
	e.want(e.do("GET", strings.TrimPrefix(link, "http://localhost:8080"), "", ""), 200, "")
	e.want(e.do("GET", strings.TrimPrefix(link, "http://localhost:8080"), "", ""), 400, "already used")

	r = e.do("POST", "/auth/general", login, "")
	e.want(r, 200, "")
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		cookie = c
	}
	if cookie == nil || cookie.Name != "cjj365" || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Secure || len(cookie.Value) < 40 {
		t.Fatalf("session cookie %+v", cookie)
	}
	r = e.do("GET", "/auth/status", "", cookie.Value)
	if r.Status != 200 || !strings.Contains(string(r.Data), `"authenticated":true`) {
		t.Fatalf("status: %s", r.Body)
	}
	r = e.do("GET", "/auth/profile", "", cookie.Value)
	if r.Status != 200 || !strings.Contains(string(r.Data), `"email":"user@example.com"`) {
		t.Fatalf("profile: %s", r.Body)
	}
	r = e.do("GET", "/auth/third-party-bindings", "", cookie.Value)
	if r.Status != 200 || string(r.Data) != "[]" {
		t.Fatalf("bindings: %s", r.Body)
	}
	r = e.do("GET", "/auth/status", "", "")
	if r.Status != 200 || !strings.Contains(string(r.Data), `"authenticated":false`) {
		t.Fatalf("anonymous status: %s", r.Body)
	}
}

func TestRegistrationErrors(t *testing.T) {
	e := newEnv(t, 1000)
	e.registerActive("taken@example.com")
	cases := []struct {
		body   string
		status int
		what   string
		field  string
	}{
		{`{"action":"register","email":"taken@example.com","password":"` + goodPassword + `"}`, 409, "already registered", "email"},
		{`{"action":"register","email":"TAKEN@example.com","password":"` + goodPassword + `"}`, 409, "already registered", "email"},
		{`{"action":"register","email":"new@example.com","password":"short1A"}`, 400, identity.PasswordRule, "password"},
		{`{"action":"register","email":"new@example.com","password":"alllowercase1"}`, 400, "upper-case", "password"},
		{`{"action":"register","email":"new@example.com","password":"NoDigitsHere"}`, 400, "digit", "password"},
		{`{"action":"register","email":"not-an-email","password":"` + goodPassword + `"}`, 400, "not a valid email", "email"},
		{`{"action":"register","email":"new@example.com","password":"` + goodPassword + `","username":"a"}`, 400, "3 to 32", "username"},
		{`{"action":"fly"}`, 400, `unknown action "fly"`, "action"},
		{`{"email":"x@example.com"}`, 400, "action", "action"},
		{`{"action":"login","email":1}`, 400, `field "email" must be a string`, "email"},
	}
	for _, c := range cases {
		r := e.do("POST", "/auth/general", c.body, "")
		e.want(r, c.status, c.what)
		if r.Error.Params["field"] != c.field {
			t.Errorf("%s: params.field = %v, want %s", c.body, r.Error.Params["field"], c.field)
		}
	}
	r := e.do("GET", "/auth/general?email=TAKEN@example.com&username=free_name", "", "")
	if r.Status != 200 || string(r.Data) != `{"email":false,"username":true}` {
		t.Fatalf("availability: %s", r.Body)
	}
	e.want(e.do("GET", "/auth/general", "", ""), 400, "email")
}

func TestWrongPasswordRevealsNothingAndThrottles(t *testing.T) {
	e := newEnv(t, 1000)
	e.registerActive("victim@example.com")
	wrongPass := e.do("POST", "/auth/general", `{"action":"login","email":"victim@example.com","password":"Wrong1Password"}`, "")
	noUser := e.do("POST", "/auth/general", `{"action":"login","email":"nobody@example.com","password":"Wrong1Password"}`, "")
	e.want(wrongPass, 401, "email or password is incorrect")
	e.want(noUser, 401, "email or password is incorrect")
	if wrongPass.Error.What != noUser.Error.What || wrongPass.Error.Code != noUser.Error.Code {
		t.Fatalf("the two failures differ: %s vs %s", wrongPass.Body, noUser.Body)
	}
	for range 4 {
		e.want(e.do("POST", "/auth/general", `{"action":"login","email":"victim@example.com","password":"Wrong1Password"}`, ""), 401, "")
	}
	// Five failures for the account: even the right password waits now.
	r := e.do("POST", "/auth/general", `{"action":"login","email":"victim@example.com","password":"`+goodPassword+`"}`, "")
	e.want(r, 429, "too many failed logins")
	if secs := r.Header.Get("Retry-After"); secs == "" || secs == "0" {
		t.Fatalf("Retry-After = %q", secs)
	}
}

func TestLogoutAndRefreshRevokeServerSide(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.registerActive("a@example.com")

	r := e.do("POST", "/auth/refresh", "", session)
	e.want(r, 200, "")
	fresh := sessionCookie(t, r)
	if fresh == session {
		t.Fatal("refresh kept the same session id")
	}
	e.want(e.do("GET", "/auth/profile", "", session), 401, "session")
	e.want(e.do("GET", "/auth/profile", "", fresh), 200, "")

	r = e.do("POST", "/auth/logout", "", fresh)
	e.want(r, 200, "")
	if c := r.Header.Get("Set-Cookie"); !strings.Contains(c, "Max-Age=0") {
		t.Fatalf("logout does not clear the cookie: %q", c)
	}
	e.want(e.do("GET", "/auth/profile", "", fresh), 401, "session")
	e.want(e.do("POST", "/auth/refresh", "", fresh), 401, "session")
	e.want(e.do("GET", "/auth/profile", "", "forged-session-id"), 401, "session")
	e.want(e.do("GET", "/auth/profile", "", ""), 401, "log in")
}

func TestPasswordReset(t *testing.T) {
	e := newEnv(t, 1000)
	session, _ := e.registerActive("r@example.com")
	e.want(e.do("POST", "/auth/general", `{"action":"reset","email":"nobody@example.com"}`, ""), 200, "")
	unknown := e.do("POST", "/auth/general", `{"action":"reset","email":"nobody@example.com"}`, "")
	known := e.do("POST", "/auth/general", `{"action":"reset","email":"r@example.com"}`, "")
	if unknown.Body != known.Body {
		t.Fatalf("reset answers differ for known and unknown addresses:\n%s\n%s", unknown.Body, known.Body)
	}
	_, link := e.lastMail()
	token := link[strings.Index(link, "token=")+len("token="):]
	e.want(e.do("POST", "/auth/general", `{"action":"reset-confirm","token":"`+token+`","password":"weak"}`, ""), 400, identity.PasswordRule)
	e.want(e.do("POST", "/auth/general", `{"action":"reset-confirm","token":"`+token+`","password":"New2Password"}`, ""), 200, "")
	e.want(e.do("POST", "/auth/general", `{"action":"reset-confirm","token":"`+token+`","password":"New3Password"}`, ""), 400, "already used")
	e.want(e.do("GET", "/auth/profile", "", session), 401, "")
	e.want(e.do("POST", "/auth/general", `{"action":"login","email":"r@example.com","password":"`+goodPassword+`"}`, ""), 401, "")
	e.want(e.do("POST", "/auth/general", `{"action":"login","email":"r@example.com","password":"New2Password"}`, ""), 200, "")
}

func TestDeviceTokenRefreshOverHTTP(t *testing.T) {
	e := newEnv(t, 1000)
	tokens, err := e.devices.Issue(t.Context(), 31, 7)
	if err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/auth/refresh", `{"refresh_token":"`+tokens.RefreshToken+`"}`, "")
	e.want(r, 200, "")
	var got struct{ Session devicetoken.Tokens }
	if err := json.Unmarshal(r.Data, &got); err != nil || got.Session.AccessToken == "" ||
		got.Session.RefreshToken == tokens.RefreshToken || got.Session.ExpiresIn <= 60 || got.Session.TokenType != "Bearer" {
		t.Fatalf("refresh: %s", r.Body)
	}
	// Reusing the rotated token: 401, code 10003, key refresh_token_rotated.
	r = e.do("POST", "/auth/refresh", `{"refresh_token":"`+tokens.RefreshToken+`"}`, "")
	e.want(r, 401, "")
	if r.Error.Code != 10003 || r.Error.Key != "refresh_token_rotated" || r.Data != nil {
		t.Fatalf("reuse: %s", r.Body)
	}
	e.want(e.do("POST", "/auth/refresh", `{"refresh_token":"rt_unknown"}`, ""), 401, "")
	e.want(e.do("POST", "/auth/refresh", `{}`, ""), 400, "refresh_token")
}
