package identity_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

// countingStore counts the calls that reach the store.
type countingStore struct {
	store.Store
	reads, writes atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, k store.Key) (store.Item, error) {
	c.reads.Add(1)
	return c.Store.Get(ctx, k)
}
func (c *countingStore) Query(ctx context.Context, q store.Query) (store.Page, error) {
	c.reads.Add(1)
	return c.Store.Query(ctx, q)
}
func (c *countingStore) Put(ctx context.Context, it store.Item, cond store.Cond) (store.Item, error) {
	c.writes.Add(1)
	return c.Store.Put(ctx, it, cond)
}
func (c *countingStore) Increment(ctx context.Context, k store.Key, d int64, exp time.Time) (int64, error) {
	c.writes.Add(1)
	return c.Store.Increment(ctx, k, d, exp)
}

func newService(tb testing.TB, cfg identity.Config) (*identity.Service, *countingStore) {
	tb.Helper()
	p := testenv.New(tb)
	st := &countingStore{Store: p.Store}
	return identity.New(st, p.Sealer, p.Outbox, p.Log, cfg), st
}

var fast = identity.Config{HashMemoryKiB: 64, HashPasses: 1}

func TestPasswordRule(t *testing.T) {
	for pw, ok := range map[string]bool{
		"Abcdefg1": true, "Ab1": false, "abcdefg1": false, "ABCDEFG1": false, "Abcdefgh": false,
		"Ünïcödé1a": true, string(make([]byte, 300)) + "Aa1": false,
	} {
		if err := identity.CheckPassword(pw); (err == nil) != ok {
			t.Errorf("CheckPassword(%q) = %v, want ok=%v", pw, err, ok)
		}
	}
}

// TestAuthenticationCostsOneRead pins the hot path: resolving a session
// or an API key is one store read and no write (an API key's last-used
// time is written at most every few minutes).
func TestAuthenticationCostsOneRead(t *testing.T) {
	ctx := context.Background()
	ids, st := newService(t, fast)
	u, err := ids.Register(ctx, identity.Registration{Email: "one@example.com", Password: "Read1Only", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ids.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	_, token, err := ids.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "k",
		Permissions: []identity.Permission{{ObType: "devices", ObID: "*", Actions: []string{"read"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.APIKeyPrincipal(ctx, token); err != nil { // records first use
		t.Fatal(err)
	}
	for name, resolve := range map[string]func() error{
		"session": func() error { _, err := ids.SessionPrincipal(ctx, sess.Token); return err },
		"apikey":  func() error { _, err := ids.APIKeyPrincipal(ctx, token); return err },
	} {
		r0, w0 := st.reads.Load(), st.writes.Load()
		for range 10 {
			if err := resolve(); err != nil {
				t.Fatal(err)
			}
		}
		if reads, writes := st.reads.Load()-r0, st.writes.Load()-w0; reads != 10 || writes != 0 {
			t.Errorf("%s: 10 authentications made %d reads and %d writes, want 10 and 0", name, reads, writes)
		}
	}
}

// BenchmarkAuthenticate is the cost authentication adds to a request.
func BenchmarkAuthenticate(b *testing.B) {
	ctx := context.Background()
	ids, _ := newService(b, fast)
	u, _ := ids.Register(ctx, identity.Registration{Email: "bench@example.com", Password: "Bench1Mark", Active: true})
	sess, _ := ids.StartSession(ctx, u)
	_, token, _ := ids.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "k",
		Permissions: []identity.Permission{{ObType: "devices", ObID: "*", Actions: []string{"read"}}}})
	b.Run("session", func(b *testing.B) {
		for b.Loop() {
			if _, err := ids.SessionPrincipal(ctx, sess.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apikey", func(b *testing.B) {
		for b.Loop() {
			if _, err := ids.APIKeyPrincipal(ctx, token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLogin is a full login with production argon2id cost.
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	ids, _ := newService(b, identity.Config{})
	if _, err := ids.Register(ctx, identity.Registration{Email: "login@example.com", Password: "Bench1Mark", Active: true}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := ids.Login(ctx, "login@example.com", "Bench1Mark", "192.0.2.1"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSessionExpires(t *testing.T) {
	ctx := context.Background()
	ids, _ := newService(t, identity.Config{SessionTTL: time.Second, HashMemoryKiB: 64, HashPasses: 1})
	u, err := ids.Register(ctx, identity.Registration{Email: "short@example.com", Password: "Short1Lived", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ids.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.SessionPrincipal(ctx, sess.Token); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(sess.ExpiresAt) + 1100*time.Millisecond)
	if _, err := ids.SessionPrincipal(ctx, sess.Token); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("expired session: %v", err)
	}
	if _, _, err := ids.RefreshSession(ctx, sess.Token); apperr.CodeOf(err) != apperr.Unauthorized {
		t.Fatalf("refresh of an expired session: %v", err)
	}
}
