package devicetoken_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
)

// encodings of b that a careless record could hold.
func encodings(b []byte) [][]byte {
	return [][]byte{
		b,
		[]byte(base64.StdEncoding.EncodeToString(b)),
		[]byte(base64.RawStdEncoding.EncodeToString(b)),
		[]byte(base64.RawURLEncoding.EncodeToString(b)),
		[]byte(hex.EncodeToString(b)),
	}
}

func TestSigningKeyStoredOnlySealed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	svc := r.service(devicetoken.Config{})
	if _, err := svc.Issue(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	kid, priv, err := devicetoken.SigningKeyForTest(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	it, err := r.st.Get(ctx, devicetoken.KeyItem)
	if err != nil {
		t.Fatal(err)
	}
	if it.Key.Table != "identity" || it.Key.PK != "signing-key" || it.Key.SK != "device-jwt" {
		t.Fatalf("key item at %s", it.Key)
	}
	secrets := append(encodings(priv.Seed()), encodings(priv)...)
	for _, s := range secrets {
		if bytes.Contains(it.Value, s) {
			t.Fatal("the stored signing key record contains the private key")
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(it.Value, &rec); err != nil {
		t.Fatal(err)
	}
	if rec["kid"] != kid || rec["alg"] != "EdDSA" || rec["sealed_private_key"] == nil || rec["public_key"] == nil {
		t.Fatalf("key record = %s", it.Value)
	}
	// The sealed part opens only under the signing key's context.
	sealed, _ := base64.StdEncoding.DecodeString(rec["sealed_private_key"].(string))
	seed, err := r.sealer.Open(ctx, sealed, map[string]string{"purpose": "device-jwt-signing-key"})
	if err != nil || !bytes.Equal(seed, priv.Seed()) {
		t.Fatalf("open sealed key: %v", err)
	}
	if _, err := r.sealer.Open(ctx, sealed, map[string]string{"purpose": "other"}); err == nil {
		t.Fatal("sealed key opened under another context")
	}

	// Nor is it anywhere in the data file.
	if err := r.closeDB(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(r.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if bytes.Contains(file, s) {
			t.Fatal("the data file contains the private key")
		}
	}
}

func TestSigningKeySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	before, err := r.service(devicetoken.Config{}).Issue(ctx, 11, 12)
	if err != nil {
		t.Fatal(err)
	}
	// A new Service and a new sealer over the same store and master key
	// file, as after a process restart.
	after := devicetoken.New(r.st, sealerAt(t, r.keyPath), devicetoken.Config{Now: r.clock.Now})
	c, err := after.Verify(ctx, before.AccessToken)
	if err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
	if c.DeviceID != 11 {
		t.Fatalf("claims = %+v", c)
	}
	tok, err := after.Issue(ctx, 11, 12)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := after.Verify(ctx, tok.AccessToken)
	if err != nil || c2.KeyID != c.KeyID {
		t.Fatalf("kid after restart %q, before %q (%v)", c2.KeyID, c.KeyID, err)
	}
	if _, err := after.Refresh(ctx, before.RefreshToken); err != nil {
		t.Fatalf("refresh token from before the restart: %v", err)
	}
}

func TestFirstUseRaceEndsWithOneKey(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	const n = 8
	var (
		svcs  = make([]*devicetoken.Service, n)
		toks  = make([]devicetoken.Tokens, n)
		errs  = make([]error, n)
		start = make(chan struct{})
		wg    sync.WaitGroup
	)
	for i := range n {
		svcs[i] = devicetoken.New(r.st, sealerAt(t, r.keyPath), devicetoken.Config{Now: r.clock.Now})
		wg.Go(func() {
			<-start
			toks[i], errs[i] = svcs[i].Issue(ctx, int64(i+1), 1)
		})
	}
	close(start)
	wg.Wait()

	kids := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("service %d: %v", i, errs[i])
		}
		kid, _, _ := devicetoken.SigningKeyForTest(ctx, svcs[i])
		kids[kid] = true
	}
	if len(kids) != 1 {
		t.Fatalf("%d signing keys after a first-use race, want 1", len(kids))
	}
	// Every service accepts every other's tokens.
	for i := range n {
		for j := range n {
			if c, err := svcs[i].Verify(ctx, toks[j].AccessToken); err != nil || c.DeviceID != int64(j+1) {
				t.Fatalf("service %d verifying token of %d: %+v %v", i, j, c, err)
			}
		}
	}
}

func TestWrongMasterKeyIsNotUnauthorized(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	tok, err := r.service(devicetoken.Config{}).Issue(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Another master key cannot open the stored signing key: that is the
	// server's failure (internal), never a 401 that sends the agent to
	// re-login.
	other := devicetoken.New(r.st, sealerAt(t, filepath.Join(t.TempDir(), "other.key")), devicetoken.Config{Now: r.clock.Now})
	_, err = other.Verify(ctx, tok.AccessToken)
	if err == nil || apperr.CodeOf(err) != apperr.Internal {
		t.Fatalf("Verify with the wrong master key: %v, want an internal error", err)
	}
	if _, err := other.Issue(ctx, 1, 1); err == nil || apperr.CodeOf(err) != apperr.Internal {
		t.Fatalf("Issue with the wrong master key: %v", err)
	}
}
