package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// NewCachingVerifier returns a DeviceVerifier that remembers the tokens v
// accepted, by their SHA-256, until each token's exp, so a device polling
// with one access token pays v's signature check (EdDSA, ~100 µs) once per
// token instead of once per request. It holds at most size tokens (two
// generations of size/2: when the newer fills, the older is dropped, and a
// hit in the older moves up), so it is bounded and roughly LRU. Rejections
// and verifier failures are never cached. now is the clock (time.Now when
// nil); size below 2 means 2.
//
// Use it only with a verifier whose answer depends on nothing but the
// token and the time (devicetoken: signature, claims, exp): a token that
// could be revoked before its exp would stay accepted until then.
func NewCachingVerifier(v DeviceVerifier, size int, now func() time.Time) DeviceVerifier {
	if now == nil {
		now = time.Now
	}
	half := max(1, size/2)
	return &cachingVerifier{v: v, now: now, half: half, cur: make(map[[32]byte]cachedDevice, half)}
}

type cachingVerifier struct {
	v    DeviceVerifier
	now  func() time.Time
	half int

	mu       sync.Mutex
	cur, old map[[32]byte]cachedDevice
}

type cachedDevice struct {
	deviceID, userID int64
	exp              time.Time
}

func (c *cachingVerifier) VerifyDevice(ctx context.Context, token string) (deviceID, userID int64, err error) {
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	e, ok := c.cur[key]
	if !ok {
		if e, ok = c.old[key]; ok && now.Before(e.exp) {
			c.put(key, e)
		}
	}
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.deviceID, e.userID, nil
	}
	deviceID, userID, err = c.v.VerifyDevice(ctx, token)
	if err != nil {
		return 0, 0, err
	}
	if exp, ok := jwtExpiry(token); ok && now.Before(exp) {
		c.mu.Lock()
		c.put(key, cachedDevice{deviceID: deviceID, userID: userID, exp: exp})
		c.mu.Unlock()
	}
	return deviceID, userID, nil
}

// put adds an entry, starting a new generation when the current is full.
// c.mu is held.
func (c *cachingVerifier) put(key [32]byte, e cachedDevice) {
	if len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[[32]byte]cachedDevice, c.half)
	}
	c.cur[key] = e
}

// jwtExpiry reads the exp claim of a JWT the verifier has just accepted
// (so its payload is the signed one).
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(b, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}
