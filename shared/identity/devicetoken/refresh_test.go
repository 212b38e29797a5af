package devicetoken_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
)

func wantRotated(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, devicetoken.ErrRefreshRotated) {
		t.Fatalf("error %v, want ErrRefreshRotated", err)
	}
	wantCode(t, err, apperr.Unauthorized)
	if m := apperr.MessageOf(err); !strings.Contains(m, "rotated") || !strings.Contains(m, "family revoked") {
		t.Fatalf("message %q does not say rotated (the agent matches it)", apperr.MessageOf(err))
	}
}

func wantPlainUnauthorized(t *testing.T, err error) {
	t.Helper()
	wantCode(t, err, apperr.Unauthorized)
	if errors.Is(err, devicetoken.ErrRefreshRotated) {
		t.Fatalf("error %v is ErrRefreshRotated, want a plain Unauthorized", err)
	}
}

func TestRefreshRotates(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	first, err := svc.Issue(ctx, 5, 6)
	if err != nil {
		t.Fatal(err)
	}
	other, err := svc.Issue(ctx, 5, 6) // another family of the same device
	if err != nil {
		t.Fatal(err)
	}

	r.clock.Advance(10 * time.Minute)
	second, err := svc.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken ||
		second.TokenType != "Bearer" || second.ExpiresIn != 3600 {
		t.Fatalf("refreshed tokens = %+v", second)
	}
	c, err := svc.Verify(ctx, second.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != 5 || c.UserID != 6 || !c.IssuedAt.Equal(r.clock.Now()) {
		t.Fatalf("claims after refresh = %+v", c)
	}

	// The chain goes on while each token is used once.
	r.clock.Advance(10 * time.Minute)
	third, err := svc.Refresh(ctx, second.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}

	// Reuse of a rotated token: ErrRefreshRotated, and the family's live
	// token is revoked with it.
	_, err = svc.Refresh(ctx, first.RefreshToken)
	wantRotated(t, err)
	_, err = svc.Refresh(ctx, third.RefreshToken)
	wantRotated(t, err)
	_, err = svc.Refresh(ctx, second.RefreshToken)
	wantRotated(t, err)

	// Access tokens already issued stay valid until they expire, and the
	// other family is untouched.
	if _, err := svc.Verify(ctx, third.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, other.RefreshToken); err != nil {
		t.Fatalf("other family: %v", err)
	}
}

func TestRefreshExpired(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{RefreshTTL: 48 * time.Hour})
	a, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}

	r.clock.Advance(48*time.Hour - time.Second)
	// Just before expiry it refreshes, and the new token's 48 h start now.
	a2, err := svc.Refresh(ctx, a.RefreshToken)
	if err != nil {
		t.Fatalf("refresh just before expiry: %v", err)
	}
	r.clock.Advance(time.Second)
	_, err = svc.Refresh(ctx, b.RefreshToken)
	wantPlainUnauthorized(t, err)
	if _, err := svc.Refresh(ctx, a2.RefreshToken); err != nil {
		t.Fatalf("sliding expiry: %v", err)
	}
}

func TestRefreshUnknownOrMalformed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	for name, s := range map[string]string{
		"empty":              "",
		"garbage":            "garbage",
		"unknown":            "rt_" + base64.RawURLEncoding.EncodeToString(random),
		"access token":       tok.AccessToken,
		"truncated":          tok.RefreshToken[:len(tok.RefreshToken)-1],
		"extended":           tok.RefreshToken + "A",
		"wrong prefix":       "xx_" + tok.RefreshToken[3:],
		"surrounding spaces": " " + tok.RefreshToken + " ",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := svc.Refresh(ctx, s)
			wantPlainUnauthorized(t, err)
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q echoes the token", err)
			}
		})
	}
	// None of that used up the real token.
	if _, err := svc.Refresh(ctx, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshTokenStoredOnlyHashed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	it, err := r.st.Get(ctx, devicetoken.RefreshItemForTest(tok.RefreshToken))
	if err != nil {
		t.Fatalf("refresh record under the token's hash: %v", err)
	}
	secret := tok.RefreshToken[len("rt_"):]
	raw, _ := base64.RawURLEncoding.DecodeString(secret)
	if bytes.Contains(it.Value, []byte(secret)) || bytes.Contains(it.Value, raw) || strings.Contains(it.PK, secret) {
		t.Fatalf("refresh record %s holds the token: %s", it.Key, it.Value)
	}
}

func TestRefreshConcurrentOnlyOneWins(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	tok, err := svc.Issue(ctx, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]devicetoken.Tokens, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = svc.Refresh(ctx, tok.RefreshToken)
		})
	}
	close(start)
	wg.Wait()

	var winner *devicetoken.Tokens
	for i, err := range errs {
		if err == nil {
			if winner != nil {
				t.Fatal("two concurrent refreshes of one token both succeeded")
			}
			winner = &results[i]
			continue
		}
		wantRotated(t, err)
	}
	if winner == nil {
		t.Fatal("no refresh succeeded")
	}
	if _, err := svc.Verify(ctx, winner.AccessToken); err != nil {
		t.Fatal(err)
	}
	// The losers presented a rotated token, which revoked the family: the
	// winner's new refresh token no longer works either.
	_, err = svc.Refresh(ctx, winner.RefreshToken)
	wantRotated(t, err)
}

func TestRefreshAcrossServices(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	a, b := r.service(devicetoken.Config{}), r.service(devicetoken.Config{})
	tok, err := a.Issue(ctx, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	next, err := b.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(ctx, next.AccessToken); err != nil {
		t.Fatal(err)
	}
	_, err = a.Refresh(ctx, tok.RefreshToken)
	wantRotated(t, err)
}

func TestRefreshItemsExpireInTheStore(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{RefreshTTL: time.Hour})
	tok, err := svc.Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := r.clock.Now().Add(time.Hour)
	it, err := r.st.Get(ctx, devicetoken.RefreshItemForTest(tok.RefreshToken))
	if err != nil {
		t.Fatal(err)
	}
	if !it.ExpiresAt.Equal(want) {
		t.Fatalf("refresh item expires at %v, want %v", it.ExpiresAt, want)
	}
	r.clock.Advance(10 * time.Minute)
	next, err := svc.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// The used token keeps its own expiry (reuse stays detectable until
	// then); the new one gets a fresh hour.
	if it, err = r.st.Get(ctx, devicetoken.RefreshItemForTest(tok.RefreshToken)); err != nil || !it.ExpiresAt.Equal(want) {
		t.Fatalf("used item expires at %v (%v), want %v", it.ExpiresAt, err, want)
	}
	if it, err = r.st.Get(ctx, devicetoken.RefreshItemForTest(next.RefreshToken)); err != nil || !it.ExpiresAt.Equal(r.clock.Now().Add(time.Hour)) {
		t.Fatalf("new item expires at %v (%v)", it.ExpiresAt, err)
	}
	// The signing key never expires.
	if it, err = r.st.Get(ctx, devicetoken.KeyItem); err != nil || !it.ExpiresAt.IsZero() {
		t.Fatalf("signing key expires at %v (%v)", it.ExpiresAt, err)
	}
}

func TestRevokeDevice(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	a, err := svc.Issue(ctx, 5, 6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.Issue(ctx, 5, 6) // a second family of the same device
	if err != nil {
		t.Fatal(err)
	}
	other, err := svc.Issue(ctx, 7, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RevokeDevice(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{a.RefreshToken, b.RefreshToken} {
		if _, err := svc.Refresh(ctx, tok); apperr.CodeOf(err) != apperr.Unauthorized {
			t.Errorf("refresh of a deleted device's token: %v", err)
		}
	}
	if _, err := svc.Refresh(ctx, other.RefreshToken); err != nil {
		t.Errorf("another device's token: %v", err)
	}
	if err := svc.RevokeDevice(ctx, 99); err != nil {
		t.Errorf("a device without tokens: %v", err)
	}
}
