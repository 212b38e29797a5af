package devices_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

const grantTestURI = testenv.PublicURL + "/device"

var (
	grantUserCodeFormat = regexp.MustCompile(`^[A-Z0-9]{4}-[A-Z0-9]{4}$`)
	grantUserCodeChars  = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ2-9]{4}-[BCDFGHJKLMNPQRSTVWXZ2-9]{4}$`)
	grantRegCodeFormat  = regexp.MustCompile(`^rc_[A-Za-z0-9_-]{43}$`)
)

func grantSetup(t *testing.T, cfg devices.GrantConfig) (*testenv.Parts, *devices.Grant) {
	t.Helper()
	p := testenv.New(t)
	if cfg.VerificationURI == "" {
		cfg.VerificationURI = grantTestURI
	}
	cfg.Now = p.Clock.Now
	return p, devices.NewGrant(p.Store, cfg)
}

func grantWantErr(t *testing.T, err error, code apperr.Code, field string) {
	t.Helper()
	if got := apperr.CodeOf(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
	if field == "" {
		return
	}
	var e *apperr.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *apperr.Error", err)
	}
	if e.Field != field {
		t.Fatalf("error %v: field %q, want %q", err, e.Field, field)
	}
}

func grantStart(t *testing.T, g *devices.Grant) devices.DeviceAuthorization {
	t.Helper()
	da, err := g.Start(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return da
}

func grantPoll(t *testing.T, g *devices.Grant, deviceCode, want string) devices.PollResult {
	t.Helper()
	res, err := g.Poll(context.Background(), deviceCode)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	if res.Status != want {
		t.Fatalf("poll status %q, want %q", res.Status, want)
	}
	return res
}

func grantVerify(t *testing.T, g *devices.Grant, userID int64, userCode string, approve bool, want string) {
	t.Helper()
	got, err := g.Verify(context.Background(), userID, userCode, approve)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got != want {
		t.Fatalf("verify answered %q, want %q", got, want)
	}
}

// Scenario 1: device_start's fields and formats.
func TestGrantStart(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	if da.ExpiresIn != 900 || da.Interval != 5 {
		t.Fatalf("defaults: expires_in %d interval %d, want 900 and 5", da.ExpiresIn, da.Interval)
	}
	if !grantUserCodeFormat.MatchString(da.UserCode) || !grantUserCodeChars.MatchString(da.UserCode) {
		t.Fatalf("user code %q is not XXXX-XXXX over the unambiguous alphabet", da.UserCode)
	}
	raw, err := base64.RawURLEncoding.DecodeString(da.DeviceCode)
	if err != nil || len(raw) < 32 {
		t.Fatalf("device code %q is not 256 random bits in base64url (%v)", da.DeviceCode, err)
	}
	if da.VerificationURI != grantTestURI {
		t.Fatalf("verification_uri %q", da.VerificationURI)
	}
	if want := grantTestURI + "?user_code=" + da.UserCode; da.VerificationURIComplete != want {
		t.Fatalf("verification_uri_complete %q, want %q", da.VerificationURIComplete, want)
	}

	other, err := g.Start(ctx, 60, 7)
	if err != nil {
		t.Fatal(err)
	}
	if other.ExpiresIn != 60 || other.Interval != 7 {
		t.Fatalf("asked 60/7, got expires_in %d interval %d", other.ExpiresIn, other.Interval)
	}
	if other.DeviceCode == da.DeviceCode || other.UserCode == da.UserCode {
		t.Fatal("two grants share a code")
	}
	for _, c := range [][2]int{{30, 1}, {3600, 3600}} {
		if _, err := g.Start(ctx, c[0], c[1]); err != nil {
			t.Fatalf("Start(%d, %d): %v", c[0], c[1], err)
		}
	}

	// A configured default interval is what an agent asking for none gets.
	_, g2 := grantSetup(t, devices.GrantConfig{Interval: 3 * time.Second})
	if da := grantStart(t, g2); da.Interval != 3 {
		t.Fatalf("configured interval 3 s, told %d", da.Interval)
	}
}

func TestGrantStartInvalid(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	for _, c := range []struct {
		expiresIn, interval int
		field               string
	}{
		{29, 0, "expires_in"}, {3601, 0, "expires_in"}, {-1, 0, "expires_in"},
		{0, -1, "interval"}, {0, 3601, "interval"}, {900, -5, "interval"},
	} {
		_, err := g.Start(ctx, c.expiresIn, c.interval)
		grantWantErr(t, err, apperr.Invalid, c.field)
	}
}

func TestGrantStartNeedsVerificationURI(t *testing.T) {
	p := testenv.New(t)
	g := devices.NewGrant(p.Store, devices.GrantConfig{Now: p.Clock.Now})
	_, err := g.Start(context.Background(), 0, 0)
	grantWantErr(t, err, apperr.Internal, "")
}

// The store holds digests of device and registration codes, never the
// codes, at the keys grant.go documents, expiring with them.
func TestGrantStoresOnlyDigests(t *testing.T) {
	ctx := context.Background()
	p, g := grantSetup(t, devices.GrantConfig{})
	da, err := g.Start(ctx, 120, 0)
	if err != nil {
		t.Fatal(err)
	}
	digest := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	gi, err := p.Store.Get(ctx, store.Key{Table: devices.GrantTable, PK: "devicegrant#" + digest(da.DeviceCode), SK: "grant"})
	if err != nil {
		t.Fatalf("grant at its digest: %v", err)
	}
	if strings.Contains(string(gi.Value), da.DeviceCode) {
		t.Fatal("the grant record contains the device code")
	}
	if d := gi.ExpiresAt.Sub(p.Clock.Now()); d < 118*time.Second || d > 122*time.Second {
		t.Fatalf("grant expires in %v, want about 120 s", d)
	}
	ui, err := p.Store.Get(ctx, store.Key{Table: devices.GrantTable, PK: "deviceusercode#" + strings.ReplaceAll(da.UserCode, "-", ""), SK: "usercode"})
	if err != nil {
		t.Fatalf("user code item: %v", err)
	}
	if !ui.ExpiresAt.Equal(gi.ExpiresAt) {
		t.Fatalf("user code expires %v, grant %v", ui.ExpiresAt, gi.ExpiresAt)
	}

	grantVerify(t, g, 7, da.UserCode, true, "approved")
	res := grantPoll(t, g, da.DeviceCode, "ready")
	ri, err := p.Store.Get(ctx, store.Key{Table: devices.GrantTable, PK: "deviceregcode#" + digest(res.RegistrationCode), SK: "regcode"})
	if err != nil {
		t.Fatalf("registration code at its digest: %v", err)
	}
	if strings.Contains(string(ri.Value), res.RegistrationCode) {
		t.Fatal("the registration code record contains the code")
	}
	if d := ri.ExpiresAt.Sub(p.Clock.Now()); d < 598*time.Second || d > 602*time.Second {
		t.Fatalf("registration code expires in %v, want about 600 s", d)
	}
	for _, k := range []store.Key{gi.Key, ui.Key} {
		if _, err := p.Store.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s after ready: %v, want gone", k, err)
		}
	}
}

// Scenario 2: pending until approved, then ready once with the user and a
// registration code, no tokens; then the grant is gone.
func TestGrantApproveThenReadyOnce(t *testing.T) {
	ctx := context.Background()
	p, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	grantPoll(t, g, da.DeviceCode, "authorization_pending")
	p.Clock.Advance(5 * time.Second)
	grantPoll(t, g, da.DeviceCode, "authorization_pending")

	// Case-insensitive, dash optional.
	grantVerify(t, g, 42, strings.ToLower(strings.ReplaceAll(da.UserCode, "-", "")), true, "approved")
	grantVerify(t, g, 42, da.UserCode, true, "approved") // idempotent

	p.Clock.Advance(5 * time.Second)
	res := grantPoll(t, g, da.DeviceCode, "ready")
	if res.UserID != 42 {
		t.Fatalf("ready for user %d, want 42", res.UserID)
	}
	if !grantRegCodeFormat.MatchString(res.RegistrationCode) {
		t.Fatalf("registration code %q is not rc_ + 43 base64url", res.RegistrationCode)
	}
	if res.RegistrationTTL != 600 {
		t.Fatalf("registration_code_ttl %d, want 600", res.RegistrationTTL)
	}

	// Consumed: the device code is now unknown, and so is the user code.
	p.Clock.Advance(5 * time.Second)
	_, err := g.Poll(ctx, da.DeviceCode)
	grantWantErr(t, err, apperr.NotFound, "")
	_, err = g.Verify(ctx, 42, da.UserCode, true)
	grantWantErr(t, err, apperr.NotFound, "")

	uid, err := g.ConsumeRegistrationCode(ctx, res.RegistrationCode)
	if err != nil || uid != 42 {
		t.Fatalf("consume: user %d, %v; want 42", uid, err)
	}
}

func TestGrantDenied(t *testing.T) {
	ctx := context.Background()
	p, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	grantVerify(t, g, 42, da.UserCode, false, "denied")
	grantVerify(t, g, 42, da.UserCode, false, "denied") // idempotent
	_, err := g.Verify(ctx, 42, da.UserCode, true)
	grantWantErr(t, err, apperr.Conflict, "")
	res := grantPoll(t, g, da.DeviceCode, "access_denied")
	if res.UserID != 0 || res.RegistrationCode != "" {
		t.Fatalf("denied poll carries %+v", res)
	}
	p.Clock.Advance(5 * time.Second)
	grantPoll(t, g, da.DeviceCode, "access_denied")
}

func TestGrantExpiry(t *testing.T) {
	ctx := context.Background()
	p, g := grantSetup(t, devices.GrantConfig{})
	pending, err := g.Start(ctx, 30, 0)
	if err != nil {
		t.Fatal(err)
	}
	approved, err := g.Start(ctx, 30, 0)
	if err != nil {
		t.Fatal(err)
	}
	grantPoll(t, g, pending.DeviceCode, "authorization_pending")
	grantVerify(t, g, 42, approved.UserCode, true, "approved")

	p.Clock.Advance(31 * time.Second)
	grantPoll(t, g, pending.DeviceCode, "expired")
	grantPoll(t, g, pending.DeviceCode, "expired") // not paced, not consumed
	grantPoll(t, g, approved.DeviceCode, "expired")
	_, err = g.Verify(ctx, 42, pending.UserCode, true)
	grantWantErr(t, err, apperr.NotFound, "")
}

// Scenario 3 at service level: missing and unknown device codes.
func TestGrantPollInvalid(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	_, err := g.Poll(ctx, "")
	grantWantErr(t, err, apperr.Invalid, "device_code")
	_, err = g.Poll(ctx, "not-a-device-code")
	grantWantErr(t, err, apperr.NotFound, "")
	_, err = g.Poll(ctx, strings.Repeat("A", 43))
	grantWantErr(t, err, apperr.NotFound, "")
}

func TestGrantVerifyInvalid(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	for _, code := range []string{"", "BCDF", "BCDF-GHJ", "BCDF-GHJKL", "BCDFG-HJK", "BCDF_GHJK", "BCDF-GH!K", "BCDF--GHJ", "ÄBCD-GHJK"} {
		_, err := g.Verify(ctx, 42, code, true)
		grantWantErr(t, err, apperr.Invalid, "user_code")
	}
	unknown := "BBBB-BBBB"
	if unknown == da.UserCode {
		unknown = "CCCC-CCCC"
	}
	_, err := g.Verify(ctx, 42, unknown, true)
	grantWantErr(t, err, apperr.NotFound, "")
	_, err = g.Verify(ctx, 42, "AAAA-0000", true) // well-formed, outside the alphabet
	grantWantErr(t, err, apperr.NotFound, "")
	_, err = g.Verify(ctx, 0, da.UserCode, true)
	grantWantErr(t, err, apperr.Unauthorized, "")
	// None of that decided the grant.
	grantPoll(t, g, da.DeviceCode, "authorization_pending")
}

// A code is bound to the first user who decides it.
func TestGrantVerifyBoundToFirstUser(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	grantVerify(t, g, 1, da.UserCode, true, "approved")
	_, err := g.Verify(ctx, 2, da.UserCode, true)
	grantWantErr(t, err, apperr.Conflict, "")
	_, err = g.Verify(ctx, 2, da.UserCode, false)
	grantWantErr(t, err, apperr.Conflict, "")
	_, err = g.Verify(ctx, 1, da.UserCode, false) // the decision is final
	grantWantErr(t, err, apperr.Conflict, "")
	grantVerify(t, g, 1, da.UserCode, true, "approved")
	if res := grantPoll(t, g, da.DeviceCode, "ready"); res.UserID != 1 {
		t.Fatalf("ready for user %d, want 1", res.UserID)
	}
}

func TestGrantVerifyConcurrentUsers(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	const n = 8
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for u := int64(1); u <= n; u++ {
		wg.Go(func() { _, errs[u] = g.Verify(ctx, u, da.UserCode, true) })
	}
	wg.Wait()
	var winner int64
	for u := int64(1); u <= n; u++ {
		switch apperr.CodeOf(errs[u]) {
		case "":
			if winner != 0 {
				t.Fatalf("users %d and %d both decided", winner, u)
			}
			winner = u
		case apperr.Conflict:
		default:
			t.Fatalf("user %d: %v", u, errs[u])
		}
	}
	if winner == 0 {
		t.Fatal("nobody decided")
	}
	if res := grantPoll(t, g, da.DeviceCode, "ready"); res.UserID != winner {
		t.Fatalf("ready for user %d, winner was %d", res.UserID, winner)
	}
}

// Polls interleaved with a decision: the decision is never lost.
func TestGrantVerifyDuringPolls(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := g.Poll(ctx, da.DeviceCode); err != nil && apperr.CodeOf(err) != apperr.NotFound {
					t.Errorf("poll: %v", err)
					return
				}
			}
		})
	}
	got, err := g.Verify(ctx, 9, da.UserCode, false)
	close(stop)
	wg.Wait()
	if err != nil || got != "denied" {
		t.Fatalf("verify during polls: %q, %v", got, err)
	}
	grantPoll(t, g, da.DeviceCode, "access_denied")
}

func TestGrantSlowDown(t *testing.T) {
	p, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g) // interval 5 s: sooner than 2.5 s is too fast
	grantPoll(t, g, da.DeviceCode, "authorization_pending")
	grantPoll(t, g, da.DeviceCode, "slow_down")
	p.Clock.Advance(2 * time.Second)
	grantPoll(t, g, da.DeviceCode, "slow_down") // counted from the last poll, fast or not
	p.Clock.Advance(3 * time.Second)
	grantPoll(t, g, da.DeviceCode, "authorization_pending")
	p.Clock.Advance(5 * time.Second)
	grantPoll(t, g, da.DeviceCode, "authorization_pending")

	// Only pending grants are paced: a decision is answered at once.
	grantVerify(t, g, 3, da.UserCode, true, "approved")
	if res := grantPoll(t, g, da.DeviceCode, "ready"); res.UserID != 3 {
		t.Fatalf("ready for user %d", res.UserID)
	}

	// The agent's own interval sets the pace.
	fast, err := g.Start(context.Background(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	grantPoll(t, g, fast.DeviceCode, "authorization_pending")
	p.Clock.Advance(600 * time.Millisecond)
	grantPoll(t, g, fast.DeviceCode, "authorization_pending")
}

func TestGrantConcurrentPollsAfterApproval(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	da := grantStart(t, g)
	grantPoll(t, g, da.DeviceCode, "authorization_pending")
	grantVerify(t, g, 42, da.UserCode, true, "approved")

	const n = 16
	results := make([]devices.PollResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; results[i], errs[i] = g.Poll(ctx, da.DeviceCode) })
	}
	close(start)
	wg.Wait()
	var code string
	for i := range n {
		switch {
		case errs[i] == nil && results[i].Status == "ready":
			if code != "" {
				t.Fatalf("two ready answers: %q and %q", code, results[i].RegistrationCode)
			}
			code = results[i].RegistrationCode
			if results[i].UserID != 42 || !grantRegCodeFormat.MatchString(code) {
				t.Fatalf("ready answer %+v", results[i])
			}
		case apperr.CodeOf(errs[i]) == apperr.NotFound:
		default:
			t.Fatalf("poll %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if code == "" {
		t.Fatal("no poll answered ready")
	}
	if uid, err := g.ConsumeRegistrationCode(ctx, code); err != nil || uid != 42 {
		t.Fatalf("consume: %d, %v", uid, err)
	}
}

// grantReady runs a grant to ready for userID and returns the code.
func grantReady(t *testing.T, g *devices.Grant, userID int64) string {
	t.Helper()
	da := grantStart(t, g)
	grantVerify(t, g, userID, da.UserCode, true, "approved")
	return grantPoll(t, g, da.DeviceCode, "ready").RegistrationCode
}

func TestGrantRegistrationCodeSingleUse(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	code := grantReady(t, g, 42)
	other := grantReady(t, g, 43)
	if uid, err := g.ConsumeRegistrationCode(ctx, code); err != nil || uid != 42 {
		t.Fatalf("first consume: %d, %v", uid, err)
	}
	_, err := g.ConsumeRegistrationCode(ctx, code)
	grantWantErr(t, err, apperr.Invalid, "registration_code")
	used := apperr.MessageOf(err)
	for _, bad := range []string{"", "rc_", "rc_unknown", strings.TrimPrefix(other, "rc_"), other + "x", "rc_" + strings.Repeat("A", 200)} {
		_, err := g.ConsumeRegistrationCode(ctx, bad)
		grantWantErr(t, err, apperr.Invalid, "registration_code")
		if apperr.MessageOf(err) != used {
			t.Fatalf("%q: message %q differs from a used code's %q", bad, apperr.MessageOf(err), used)
		}
	}
	// Failed attempts did not burn the other code.
	if uid, err := g.ConsumeRegistrationCode(ctx, other); err != nil || uid != 43 {
		t.Fatalf("other code: %d, %v", uid, err)
	}
}

func TestGrantRegistrationCodeExpiry(t *testing.T) {
	ctx := context.Background()
	p, g := grantSetup(t, devices.GrantConfig{RegistrationTTL: 2 * time.Minute})
	da := grantStart(t, g)
	grantVerify(t, g, 42, da.UserCode, true, "approved")
	res := grantPoll(t, g, da.DeviceCode, "ready")
	if res.RegistrationTTL != 120 {
		t.Fatalf("registration_code_ttl %d, want 120", res.RegistrationTTL)
	}
	keep := grantReady(t, g, 43)
	p.Clock.Advance(119 * time.Second)
	if uid, err := g.ConsumeRegistrationCode(ctx, keep); err != nil || uid != 43 {
		t.Fatalf("code within its lifetime: %d, %v", uid, err)
	}
	p.Clock.Advance(2 * time.Second)
	_, err := g.ConsumeRegistrationCode(ctx, res.RegistrationCode)
	grantWantErr(t, err, apperr.Invalid, "registration_code")
	if apperr.MessageOf(err) != "registration_code: is invalid, expired or already used" {
		t.Fatalf("message %q", apperr.MessageOf(err))
	}
}

func TestGrantRegistrationCodeConcurrentConsume(t *testing.T) {
	ctx := context.Background()
	_, g := grantSetup(t, devices.GrantConfig{})
	code := grantReady(t, g, 42)
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; _, errs[i] = g.ConsumeRegistrationCode(ctx, code) })
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch apperr.CodeOf(err) {
		case "":
			ok++
		case apperr.Invalid:
		default:
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d consumes succeeded, want 1", ok)
	}
}

// grantCollidingStore is the real store, except that just before the first
// transaction it lets "another grant" take the user code that transaction
// is about to claim, so the store's IfAbsent really fails.
type grantCollidingStore struct {
	store.Store
	calls      int
	stolen     store.Key
	firstGrant store.Key
}

func (s *grantCollidingStore) Transact(ctx context.Context, ws []store.Write) error {
	s.calls++
	if s.calls == 1 {
		for _, w := range ws {
			switch {
			case strings.HasPrefix(w.Item.PK, "deviceusercode#"):
				s.stolen = w.Item.Key
				it := store.Item{Key: w.Item.Key, Value: []byte(`{"grant":"someone-else"}`), ExpiresAt: time.Now().Add(time.Hour)}
				if _, err := s.Store.Put(ctx, it, store.IfAbsent); err != nil {
					return err
				}
			case strings.HasPrefix(w.Item.PK, "devicegrant#"):
				s.firstGrant = w.Item.Key
			}
		}
	}
	return s.Store.Transact(ctx, ws)
}

func TestGrantStartRetriesOnUserCodeCollision(t *testing.T) {
	ctx := context.Background()
	p := testenv.New(t)
	cs := &grantCollidingStore{Store: p.Store}
	g := devices.NewGrant(cs, devices.GrantConfig{VerificationURI: grantTestURI, Now: p.Clock.Now})
	da := grantStart(t, g)
	if cs.calls != 2 {
		t.Fatalf("%d transactions, want 2 (one collision, one retry)", cs.calls)
	}
	if strings.ReplaceAll(da.UserCode, "-", "") == strings.TrimPrefix(cs.stolen.PK, "deviceusercode#") {
		t.Fatal("the grant got the taken user code")
	}
	it, err := p.Store.Get(ctx, cs.stolen)
	if err != nil || string(it.Value) != `{"grant":"someone-else"}` || it.Version != 1 {
		t.Fatalf("the other grant's user code was touched: %+v, %v", it, err)
	}
	if _, err := p.Store.Get(ctx, cs.firstGrant); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed attempt left its grant behind: %v", err)
	}
	grantVerify(t, g, 5, da.UserCode, true, "approved")
	if res := grantPoll(t, g, da.DeviceCode, "ready"); res.UserID != 5 {
		t.Fatalf("ready for user %d", res.UserID)
	}
}
