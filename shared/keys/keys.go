// Package keys is the secrets port: envelope encryption of small secrets
// (private keys, ACME account keys, DNS credentials, EAB HMAC keys, API key
// secrets) before they reach the store.
//
// Every Seal draws a fresh AES-256 data key, encrypts the plaintext with it
// in AES-256-GCM, and keeps the data key only wrapped by a KeyWrapper: a local
// master key file (keys/local) or AWS KMS (keys/kms). An encryption context
// (for example {"table":"certs","id":"42"}) binds a ciphertext to its owner:
// opening it under another context fails with ErrWrongContext.
package keys

import (
	"context"
	"errors"
)

// Errors callers test with errors.Is.
var (
	// ErrWrongContext: the ciphertext was sealed under another context.
	ErrWrongContext = errors.New("keys: ciphertext was sealed under a different encryption context")
	// ErrTampered: the ciphertext (or its wrapped data key) was altered or
	// truncated, or was not produced by Seal.
	ErrTampered = errors.New("keys: ciphertext is corrupt or was tampered with")
	// ErrNoMasterKey: the key that wraps data keys is missing.
	ErrNoMasterKey = errors.New("keys: master key is missing")
)

// Sealer encrypts and decrypts secrets. Safe for concurrent use.
type Sealer interface {
	// Seal encrypts plaintext bound to encCtx.
	Seal(ctx context.Context, plaintext []byte, encCtx map[string]string) ([]byte, error)
	// Open decrypts what Seal produced under the same encCtx. Errors:
	// ErrWrongContext, ErrTampered, ErrNoMasterKey, or the wrapper's error.
	Open(ctx context.Context, sealed []byte, encCtx map[string]string) ([]byte, error)
}

// KeyWrapper makes and unwraps data keys; adapters implement it and
// NewEnvelope turns it into a Sealer.
type KeyWrapper interface {
	// NewDataKey returns a fresh 32-byte data key and its wrapped form,
	// bound to encCtx.
	NewDataKey(ctx context.Context, encCtx map[string]string) (plain, wrapped []byte, err error)
	// UnwrapDataKey returns the data key inside wrapped. It fails with an
	// error wrapping ErrTampered when wrapped was altered.
	UnwrapDataKey(ctx context.Context, wrapped []byte, encCtx map[string]string) ([]byte, error)
	// Ping reports whether the wrapper answers.
	Ping(ctx context.Context) error
}
