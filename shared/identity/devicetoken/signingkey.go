package devicetoken

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/certfleet/certfleet/shared/store"
)

// The signing key's item. Rotation later keeps this item as the active key
// and moves retired keys to SK "device-jwt#<kid>" (still verifying until the
// last token they signed has expired); verification already looks keys up
// by kid, so tokens need no change for that.
const (
	keyPK  = "signing-key"
	keySK  = "device-jwt"
	keyAlg = "EdDSA"
	// kidLen is how many characters of the key's RFC 7638 thumbprint
	// (base64url) make its kid: 96 bits.
	kidLen = 16
)

// KeyItem is where the signing key is stored.
var KeyItem = store.Key{Table: Table, PK: keyPK, SK: keySK}

// keyEncContext binds the sealed private key to its purpose.
func keyEncContext() map[string]string {
	return map[string]string{"purpose": "device-jwt-signing-key"}
}

// errNoSigningKey: Verify found no key in the store (so no token of ours
// can exist yet).
var errNoSigningKey = errors.New("devicetoken: no signing key yet")

// keyRecord is the stored form of a signing key. The private key (its
// 32-byte seed) is stored only sealed.
type keyRecord struct {
	KID              string    `json:"kid"`
	Alg              string    `json:"alg"`
	PublicKey        []byte    `json:"public_key"`
	SealedPrivateKey []byte    `json:"sealed_private_key"`
	CreatedAt        time.Time `json:"created_at"`
}

type signingKey struct {
	kid  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// keyring is the keys a Service signs and verifies with: the active key,
// and every key still trusted for verification, by kid.
type keyring struct {
	active *signingKey
	verify map[string]ed25519.PublicKey
}

// kidOf returns the key id of an Ed25519 public key: a prefix of its
// RFC 7638 JWK thumbprint.
func kidOf(pub ed25519.PublicKey) string {
	jwk := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(jwk))
	return base64.RawURLEncoding.EncodeToString(sum[:])[:kidLen]
}

// keyring returns the cached keyring, loading it on first use. With create,
// a missing key is made (store.IfAbsent, so concurrent first uses across
// processes agree on one key); without, a missing key is errNoSigningKey.
func (s *Service) keyring(ctx context.Context, create bool) (*keyring, error) {
	if r := s.ring.Load(); r != nil {
		return r, nil
	}
	select {
	case s.loadMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.loadMu }()
	if r := s.ring.Load(); r != nil {
		return r, nil
	}
	k, err := s.loadKey(ctx)
	if errors.Is(err, store.ErrNotFound) {
		if !create {
			return nil, errNoSigningKey
		}
		k, err = s.createKey(ctx)
	}
	if err != nil {
		return nil, err
	}
	r := &keyring{active: k, verify: map[string]ed25519.PublicKey{k.kid: k.pub}}
	s.ring.Store(r)
	return r, nil
}

// loadKey reads and unseals the stored key; store.ErrNotFound when there
// is none.
func (s *Service) loadKey(ctx context.Context) (*signingKey, error) {
	it, err := s.st.Get(ctx, KeyItem)
	if err != nil {
		return nil, err
	}
	var rec keyRecord
	if err := json.Unmarshal(it.Value, &rec); err != nil {
		return nil, fmt.Errorf("devicetoken: decode signing key %s: %w", KeyItem, err)
	}
	if rec.Alg != keyAlg || len(rec.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("devicetoken: signing key %s: unsupported algorithm %q or public key size %d", KeyItem, rec.Alg, len(rec.PublicKey))
	}
	seed, err := s.sealer.Open(ctx, rec.SealedPrivateKey, keyEncContext())
	if err != nil {
		return nil, fmt.Errorf("devicetoken: unseal signing key: %w", err)
	}
	defer clear(seed)
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("devicetoken: signing key %s: sealed seed is %d bytes, want %d", KeyItem, len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if subtle.ConstantTimeCompare(pub, rec.PublicKey) != 1 || kidOf(pub) != rec.KID {
		clear(priv)
		return nil, fmt.Errorf("devicetoken: signing key %s: stored public key or kid does not match the private key", KeyItem)
	}
	return &signingKey{kid: rec.KID, priv: priv, pub: pub}, nil
}

// createKey makes a key and stores it if no other process stored one
// first; the loser of that race uses the winner's key.
func (s *Service) createKey(ctx context.Context) (*signingKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devicetoken: generate signing key: %w", err)
	}
	seed := priv.Seed()
	sealed, err := s.sealer.Seal(ctx, seed, keyEncContext())
	clear(seed)
	if err != nil {
		clear(priv)
		return nil, fmt.Errorf("devicetoken: seal signing key: %w", err)
	}
	rec := keyRecord{
		KID:              kidOf(pub),
		Alg:              keyAlg,
		PublicKey:        pub,
		SealedPrivateKey: sealed,
		CreatedAt:        s.cfg.Now().UTC(),
	}
	val, err := json.Marshal(rec)
	if err != nil {
		clear(priv)
		return nil, fmt.Errorf("devicetoken: encode signing key: %w", err)
	}
	_, err = s.st.Put(ctx, store.Item{Key: KeyItem, Value: val}, store.IfAbsent)
	if errors.Is(err, store.ErrConditionFailed) {
		clear(priv)
		return s.loadKey(ctx)
	}
	if err != nil {
		clear(priv)
		return nil, fmt.Errorf("devicetoken: store signing key: %w", err)
	}
	return &signingKey{kid: rec.KID, priv: priv, pub: pub}, nil
}
