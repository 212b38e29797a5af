package passkey_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/passkey"
	"github.com/certfleet/certfleet/shared/identity/passkey/passkeytest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store/bolt"
)

const origin = testenv.PublicURL

// testLog shows the service's log (why a verification failed) in -v runs.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	ids   *identity.Service
	pk    *passkey.Service
	clock *testenv.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	p := testenv.New(t)
	ids := p.Identity()
	pk, err := passkey.New(p.Store, ids, passkey.Config{RPID: "localhost", Origins: []string{origin}, Now: p.Clock.Now,
		Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: context.Background(), ids: ids, pk: pk, clock: p.Clock}
}

func (f *fixture) user(email string) identity.User {
	f.t.Helper()
	u, err := f.ids.Register(f.ctx, identity.Registration{Email: email, Password: "Correct1Horse", Active: true})
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

// register makes a passkey for u on a.
func (f *fixture) register(u identity.User, a *passkeytest.Authenticator) (*passkeytest.Credential, passkey.Credential) {
	f.t.Helper()
	c, err := f.pk.BeginRegistration(f.ctx, u.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, cred, err := a.Create(c.Options, passkeytest.Tweaks{})
	if err != nil {
		f.t.Fatal(err)
	}
	got, err := f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, resp)
	if err != nil {
		f.t.Fatalf("finish registration: %v", err)
	}
	return cred, got
}

// login runs a login ceremony (by email, or discoverable for "").
func (f *fixture) login(email string, a *passkeytest.Authenticator, tw passkeytest.Tweaks) (identity.User, error) {
	f.t.Helper()
	c, err := f.pk.BeginLogin(f.ctx, email)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := a.Get(c.Options, tw)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.pk.FinishLogin(f.ctx, c.CeremonyID, resp)
}

// wantVerifyFailed checks the one answer to every failed verification.
func wantVerifyFailed(t *testing.T, err error) {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != apperr.Unauthorized || ae.Message != "passkey verification failed" {
		t.Fatalf("got %v, want Unauthorized \"passkey verification failed\"", err)
	}
}

func wantBadCeremony(t *testing.T, err error) {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Field != "ceremony_id" {
		t.Fatalf("got %v, want Invalid naming ceremony_id", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	f := newFixture(t)
	for _, cfg := range []passkey.Config{
		{Origins: []string{origin}},
		{RPID: "https://localhost", Origins: []string{origin}},
		{RPID: "localhost:8080", Origins: []string{origin}},
		{RPID: "localhost"},
		{RPID: "localhost", Origins: []string{"localhost:8080"}},
		{RPID: "localhost", Origins: []string{"http://localhost:8080/app"}},
	} {
		if _, err := passkey.New(nil, f.ids, cfg); err == nil {
			t.Errorf("New(%+v) succeeded without a store", cfg)
		}
		if _, err := passkey.New(newStoreOf(t), f.ids, cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

func newStoreOf(t *testing.T) *bolt.Store {
	db, err := bolt.OpenDB(filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return bolt.New(db)
}

func TestRegisterListAndLogin(t *testing.T) {
	f := newFixture(t)
	u := f.user("alice@example.com")
	a := passkeytest.New(origin)

	c, err := f.pk.BeginRegistration(f.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		PublicKey struct {
			RP                     struct{ ID, Name string }
			User                   struct{ Name string }
			AuthenticatorSelection struct {
				ResidentKey      string `json:"residentKey"`
				UserVerification string `json:"userVerification"`
			} `json:"authenticatorSelection"`
			Attestation string `json:"attestation"`
			Exclude     []any  `json:"excludeCredentials"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(c.Options, &opts); err != nil {
		t.Fatal(err)
	}
	p := opts.PublicKey
	if p.RP.ID != "localhost" || p.RP.Name != "certfleet" || p.User.Name != "alice@example.com" ||
		p.AuthenticatorSelection.ResidentKey != "preferred" || p.AuthenticatorSelection.UserVerification != "preferred" ||
		p.Attestation != "none" || len(p.Exclude) != 0 {
		t.Fatalf("creation options: %s", c.Options)
	}
	resp, cred, err := a.Create(c.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, resp)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cred.IDString() || got.AttestationType != "none" || !got.UserVerified || got.LastUsedAt != nil {
		t.Fatalf("registered %+v", got)
	}
	list, err := f.pk.ListCredentials(f.ctx, u.ID)
	if err != nil || len(list) != 1 || list[0].ID != cred.IDString() || len(list[0].Transports) != 2 {
		t.Fatalf("list: %+v, %v", list, err)
	}

	// The second registration excludes the first passkey.
	c2, err := f.pk.BeginRegistration(f.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Create(c2.Options, passkeytest.Tweaks{}); !errors.Is(err, passkeytest.ErrExcluded) {
		t.Fatalf("second registration on the same authenticator: %v", err)
	}
	// Another authenticator may add a second passkey.
	b := passkeytest.New(origin)
	f.register(u, b)
	if list, _ := f.pk.ListCredentials(f.ctx, u.ID); len(list) != 2 {
		t.Fatalf("two passkeys listed as %+v", list)
	}

	// Login by email and discoverable login, with either authenticator.
	for _, tc := range []struct {
		email string
		a     *passkeytest.Authenticator
	}{{"alice@example.com", a}, {"Alice@Example.com", b}, {"", a}, {"", b}} {
		lu, err := f.login(tc.email, tc.a, passkeytest.Tweaks{})
		if err != nil || lu.ID != u.ID {
			t.Fatalf("login %q: %+v, %v", tc.email, lu, err)
		}
	}
	list, _ = f.pk.ListCredentials(f.ctx, u.ID)
	for _, c := range list {
		if c.LastUsedAt == nil {
			t.Fatalf("last use not recorded: %+v", c)
		}
	}
}

func TestLoginOptionsRevealNoAccount(t *testing.T) {
	f := newFixture(t)
	f.user("nopasskey@example.com")
	a := passkeytest.New(origin)
	other := f.user("other@example.com")
	f.register(other, a)
	for _, email := range []string{"nobody@example.com", "nopasskey@example.com"} {
		c, err := f.pk.BeginLogin(f.ctx, email)
		if err != nil {
			t.Fatalf("%s: %v", email, err)
		}
		var opts struct {
			PublicKey struct {
				Allow []any `json:"allowCredentials"`
			} `json:"publicKey"`
		}
		if err := json.Unmarshal(c.Options, &opts); err != nil || len(opts.PublicKey.Allow) != 0 {
			t.Fatalf("%s: options %s", email, c.Options)
		}
		// Even a valid passkey of someone else does not log in through it.
		resp, err := a.Get(c.Options, passkeytest.Tweaks{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.pk.FinishLogin(f.ctx, c.CeremonyID, resp)
		wantVerifyFailed(t, err)
	}
}

func TestRegistrationRejects(t *testing.T) {
	f := newFixture(t)
	u := f.user("bob@example.com")
	for name, tw := range map[string]passkeytest.Tweaks{
		"wrong origin":    {Origin: "https://evil.example"},
		"wrong rpId":      {RPID: "evil.example"},
		"wrong challenge": {Challenge: []byte("0123456789abcdef0123456789abcdef")},
		"wrong type":      {Type: "webauthn.get"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := f.pk.BeginRegistration(f.ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			resp, _, err := passkeytest.New(origin).Create(c.Options, tw)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, resp)
			wantVerifyFailed(t, err)
		})
	}
	if list, _ := f.pk.ListCredentials(f.ctx, u.ID); len(list) != 0 {
		t.Fatalf("rejected registrations stored %+v", list)
	}
	// Garbage is a failed verification too; an empty answer names the field.
	c, _ := f.pk.BeginRegistration(f.ctx, u.ID)
	_, err := f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, []byte(`{"id":"AAAA","type":"public-key"}`))
	wantVerifyFailed(t, err)
	c, _ = f.pk.BeginRegistration(f.ctx, u.ID)
	_, err = f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, nil)
	if ae := (*apperr.Error)(nil); !errors.As(err, &ae) || ae.Field != "credential" {
		t.Fatalf("empty credential: %v", err)
	}
}

func TestLoginRejects(t *testing.T) {
	f := newFixture(t)
	u := f.user("carol@example.com")
	a := passkeytest.New(origin)
	f.register(u, a)
	for name, tw := range map[string]passkeytest.Tweaks{
		"wrong origin":       {Origin: "https://evil.example"},
		"wrong rpId":         {RPID: "evil.example"},
		"wrong challenge":    {Challenge: []byte("0123456789abcdef0123456789abcdef")},
		"wrong type":         {Type: "webauthn.create"},
		"tampered signature": {BadSignature: true},
	} {
		for _, email := range []string{"carol@example.com", ""} {
			t.Run(name+" "+email, func(t *testing.T) {
				_, err := f.login(email, a, tw)
				wantVerifyFailed(t, err)
			})
		}
	}
	// A valid login still works afterwards.
	if _, err := f.login("carol@example.com", a, passkeytest.Tweaks{}); err != nil {
		t.Fatal(err)
	}
}

func TestCeremonyIsUsedOnceExpiresAndIsBound(t *testing.T) {
	f := newFixture(t)
	u := f.user("dave@example.com")
	mallory := f.user("mallory@example.com")
	a := passkeytest.New(origin)

	// Someone else's registration ceremony is unknown to them and stays
	// usable for its owner.
	c, err := f.pk.BeginRegistration(f.ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := a.Create(c.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.pk.FinishRegistration(f.ctx, mallory.ID, c.CeremonyID, resp)
	wantBadCeremony(t, err)
	if _, err := f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, resp); err != nil {
		t.Fatal(err)
	}
	// Replayed: the same ceremony and answer again.
	_, err = f.pk.FinishRegistration(f.ctx, u.ID, c.CeremonyID, resp)
	wantBadCeremony(t, err)

	// A login ceremony answered once cannot be answered again.
	lc, err := f.pk.BeginLogin(f.ctx, "dave@example.com")
	if err != nil {
		t.Fatal(err)
	}
	lresp, err := a.Get(lc.Options, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pk.FinishLogin(f.ctx, lc.CeremonyID, lresp); err != nil {
		t.Fatal(err)
	}
	_, err = f.pk.FinishLogin(f.ctx, lc.CeremonyID, lresp)
	wantBadCeremony(t, err)

	// A failed answer uses the ceremony up as well.
	lc, _ = f.pk.BeginLogin(f.ctx, "")
	bad, _ := a.Get(lc.Options, passkeytest.Tweaks{BadSignature: true})
	_, err = f.pk.FinishLogin(f.ctx, lc.CeremonyID, bad)
	wantVerifyFailed(t, err)
	good, _ := a.Get(lc.Options, passkeytest.Tweaks{})
	_, err = f.pk.FinishLogin(f.ctx, lc.CeremonyID, good)
	wantBadCeremony(t, err)

	// Unknown and expired ceremonies.
	_, err = f.pk.FinishLogin(f.ctx, "no-such-ceremony", good)
	wantBadCeremony(t, err)
	_, err = f.pk.FinishLogin(f.ctx, "", good)
	wantBadCeremony(t, err)
	lc, _ = f.pk.BeginLogin(f.ctx, "dave@example.com")
	good, _ = a.Get(lc.Options, passkeytest.Tweaks{})
	f.clock.Advance(passkey.CeremonyTTL + time.Second)
	_, err = f.pk.FinishLogin(f.ctx, lc.CeremonyID, good)
	wantBadCeremony(t, err)
}

func TestSignCounterMustGrow(t *testing.T) {
	f := newFixture(t)
	u := f.user("erin@example.com")
	a := passkeytest.New(origin)
	cred, _ := f.register(u, a)
	for i := 0; i < 3; i++ { // counters 1, 2, 3
		if _, err := f.login("erin@example.com", a, passkeytest.Tweaks{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []uint32{2, 3, 0} { // backwards, repeated, reset
		_, err := f.login("", a, passkeytest.Tweaks{Counter: &n})
		wantVerifyFailed(t, err)
	}
	// The clone's attempts changed nothing: the genuine next count works.
	n := uint32(4)
	if _, err := f.login("", a, passkeytest.Tweaks{Counter: &n, Credential: cred}); err != nil {
		t.Fatal(err)
	}

	// An authenticator that keeps no counter (always 0) is fine.
	v := f.user("nocounter@example.com")
	b := passkeytest.New(origin)
	f.register(v, b)
	zero := uint32(0)
	for i := 0; i < 2; i++ {
		if _, err := f.login("nocounter@example.com", b, passkeytest.Tweaks{Counter: &zero}); err != nil {
			t.Fatalf("zero counter login %d: %v", i, err)
		}
	}
}

func TestDeleteCredential(t *testing.T) {
	f := newFixture(t)
	u := f.user("frank@example.com")
	other := f.user("grace@example.com")
	a := passkeytest.New(origin)
	_, got := f.register(u, a)

	err := f.pk.DeleteCredential(f.ctx, other.ID, got.ID)
	if apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("another user's delete: %v", err)
	}
	if err := f.pk.DeleteCredential(f.ctx, u.ID, "!!"); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("malformed id: %v", err)
	}
	if list, _ := f.pk.ListCredentials(f.ctx, u.ID); len(list) != 1 {
		t.Fatalf("after the refused delete: %+v", list)
	}
	if err := f.pk.DeleteCredential(f.ctx, u.ID, got.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.pk.DeleteCredential(f.ctx, u.ID, got.ID); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("second delete: %v", err)
	}
	if list, _ := f.pk.ListCredentials(f.ctx, u.ID); len(list) != 0 {
		t.Fatalf("after delete: %+v", list)
	}
	// The deleted passkey logs in no more, discoverable or not.
	_, err = f.login("", a, passkeytest.Tweaks{})
	wantVerifyFailed(t, err)
	_, err = f.login("frank@example.com", a, passkeytest.Tweaks{Credential: a.Credentials()[0]})
	wantVerifyFailed(t, err)
	// And the same authenticator may register again.
	f.register(u, a)
}

func TestStepUp(t *testing.T) {
	f := newFixture(t)
	u := f.user("heidi@example.com")
	a := passkeytest.New(origin)

	s1, _ := f.ids.StartSession(f.ctx, u)
	s2, _ := f.ids.StartSession(f.ctx, u)
	p1, _ := f.ids.SessionPrincipal(f.ctx, s1.Token)
	p2, _ := f.ids.SessionPrincipal(f.ctx, s2.Token)

	if _, err := f.pk.BeginStepUp(f.ctx, u.ID, p1.ID); apperr.CodeOf(err) != apperr.Invalid {
		t.Fatalf("step-up without a passkey: %v", err)
	}
	f.register(u, a)

	stepUp := func(p identity.Principal, finishAs identity.Principal, tw passkeytest.Tweaks) (time.Time, error) {
		c, err := f.pk.BeginStepUp(f.ctx, p.UserID, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := a.Get(c.Options, tw)
		if err != nil {
			t.Fatal(err)
		}
		return f.pk.FinishStepUp(f.ctx, finishAs.UserID, finishAs.ID, c.CeremonyID, resp)
	}

	if f.pk.StepUpValid(f.ctx, p1) {
		t.Fatal("step-up valid before any")
	}
	// A ceremony begun in one session cannot be finished in another.
	_, err := stepUp(p1, p2, passkeytest.Tweaks{})
	wantBadCeremony(t, err)
	_, err = stepUp(p1, p1, passkeytest.Tweaks{BadSignature: true})
	wantVerifyFailed(t, err)
	if f.pk.StepUpValid(f.ctx, p1) {
		t.Fatal("step-up valid after a failed one")
	}

	until, err := stepUp(p1, p1, passkeytest.Tweaks{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(until); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("step-up until %s", until)
	}
	if !f.pk.StepUpValid(f.ctx, p1) {
		t.Fatal("step-up not valid right after it")
	}
	if f.pk.StepUpValid(f.ctx, p2) {
		t.Fatal("step-up of one session counts for another")
	}
	apiKey := identity.Principal{Kind: identity.KindAPIKey, UserID: u.ID, ID: p1.ID}
	if f.pk.StepUpValid(f.ctx, apiKey) {
		t.Fatal("step-up counts for an API key")
	}
	forged := p1
	forged.UserID = u.ID + 1
	if f.pk.StepUpValid(f.ctx, forged) {
		t.Fatal("step-up counts for another user")
	}
	f.clock.Advance(9 * time.Minute)
	if !f.pk.StepUpValid(f.ctx, p1) {
		t.Fatal("step-up expired before 10 minutes")
	}
	f.clock.Advance(time.Minute + time.Second)
	if f.pk.StepUpValid(f.ctx, p1) {
		t.Fatal("step-up valid after 10 minutes")
	}
}
