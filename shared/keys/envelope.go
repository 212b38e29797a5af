package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/certfleet/certfleet/shared/keys/internal/encctx"
)

// Envelope format, version 1. All integers are big-endian.
//
//	offset   size  field
//	0        1     format version, 1
//	1        16    context digest: SHA-256(contextDigestLabel || canonical context)[:16]
//	17       2     n, the length of the wrapped data key (1..65535)
//	19       n     wrapped data key, opaque bytes from the KeyWrapper
//	19+n     12    AES-GCM nonce, random
//	31+n     m+16  AES-256-GCM ciphertext of the m-byte plaintext, then the 16-byte tag
//
// The canonical context is the injective encoding of package encctx (sorted
// keys, every string length-prefixed). The GCM additional data is the header
// (bytes 0 to 19+n, everything before the nonce) followed by the canonical
// context, so the version, digest and wrapped key are authenticated too.
//
// The digest lets Open tell a wrong context (ErrWrongContext) from damage
// (ErrTampered) before asking the wrapper to unwrap anything. It reveals
// whether a guessed context is the right one, which is harmless for contexts
// (they name owners such as a table and a row id; they are not secrets).
const (
	formatV1      = 1
	digestLen     = 16
	lenFieldLen   = 2
	headerFixed   = 1 + digestLen + lenFieldLen // bytes before the wrapped key
	nonceLen      = 12
	tagLen        = 16
	dataKeyLen    = 32
	maxWrappedLen = 1<<16 - 1

	contextDigestLabel = "certfleet/keys/envelope/v1/context\x00"
)

// Envelope is the Sealer that NewEnvelope returns. Safe for concurrent use
// if its KeyWrapper is.
type Envelope struct {
	w KeyWrapper
}

var _ Sealer = (*Envelope)(nil)

// NewEnvelope returns a Sealer that encrypts each plaintext under a fresh
// data key from w and stores the data key wrapped by w next to the
// ciphertext (see the format above). w must not be nil.
//
// The result is an *Envelope, which also has Ping; it satisfies Sealer.
func NewEnvelope(w KeyWrapper) *Envelope {
	if w == nil {
		panic("keys: NewEnvelope with a nil KeyWrapper")
	}
	return &Envelope{w: w}
}

// Seal encrypts plaintext bound to encCtx (nil and empty are the same
// context). Each call draws a new data key, so two seals of the same
// plaintext differ. The result is 19 + len(wrapped key) + 28 bytes longer
// than plaintext: 112 bytes with keys/local, about 230 with AWS KMS.
// Errors come from the wrapper (for example keys/kms when KMS is
// unreachable), wrapped with a "keys: seal:" prefix. Seal neither keeps nor
// changes plaintext and encCtx.
func (e *Envelope) Seal(ctx context.Context, plaintext []byte, encCtx map[string]string) ([]byte, error) {
	plain, wrapped, err := e.w.NewDataKey(ctx, encCtx)
	if err != nil {
		return nil, fmt.Errorf("keys: seal: new data key: %w", err)
	}
	defer clear(plain)
	if len(plain) != dataKeyLen {
		return nil, fmt.Errorf("keys: seal: wrapper returned a %d-byte data key, want %d", len(plain), dataKeyLen)
	}
	if len(wrapped) == 0 || len(wrapped) > maxWrappedLen {
		return nil, fmt.Errorf("keys: seal: wrapper returned a %d-byte wrapped key, want 1 to %d", len(wrapped), maxWrappedLen)
	}
	aead, err := newAEAD(plain)
	if err != nil {
		return nil, fmt.Errorf("keys: seal: %w", err)
	}

	canon := encctx.Encode(encCtx)
	hdrLen := headerFixed + len(wrapped)
	out := make([]byte, 0, hdrLen+nonceLen+len(plaintext)+tagLen)
	out = append(out, formatV1)
	out = appendDigest(out, canon)
	out = binary.BigEndian.AppendUint16(out, uint16(len(wrapped)))
	out = append(out, wrapped...)

	aad := make([]byte, 0, hdrLen+len(canon))
	aad = append(aad, out...)
	aad = append(aad, canon...)
	// The AEAD draws the nonce and writes nonce || ciphertext || tag.
	return aead.Seal(out, nil, plaintext, aad), nil
}

// Open decrypts what Seal produced under the same encCtx and returns a new
// slice (it never aliases sealed). Errors, tested with errors.Is:
//
//   - ErrTampered: sealed is empty, truncated, extended, of an unknown format
//     version, or altered anywhere (including its wrapped data key, when the
//     wrapper detects it);
//   - ErrWrongContext: sealed is well formed but was sealed under another
//     context. Bytes that merely look like a version-1 envelope with a
//     different context digest also land here;
//   - ErrNoMasterKey or the wrapper's own errors (KMS unreachable, key
//     disabled), with a "keys: open:" prefix.
//
// Open checks the layout and the context digest before it calls the
// wrapper, so a wrong context or a malformed input costs no KMS request.
func (e *Envelope) Open(ctx context.Context, sealed []byte, encCtx map[string]string) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrTampered)
	}
	if sealed[0] != formatV1 {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrTampered, sealed[0])
	}
	if len(sealed) < headerFixed {
		return nil, fmt.Errorf("%w: truncated header", ErrTampered)
	}
	n := int(binary.BigEndian.Uint16(sealed[1+digestLen:]))
	hdrLen := headerFixed + n
	if n == 0 {
		return nil, fmt.Errorf("%w: empty wrapped data key", ErrTampered)
	}
	if len(sealed) < hdrLen+nonceLen+tagLen {
		return nil, fmt.Errorf("%w: truncated", ErrTampered)
	}

	canon := encctx.Encode(encCtx)
	want := appendDigest(make([]byte, 0, digestLen), canon)
	if subtle.ConstantTimeCompare(sealed[1:1+digestLen], want) != 1 {
		return nil, ErrWrongContext
	}

	wrapped := sealed[headerFixed:hdrLen:hdrLen]
	plain, err := e.w.UnwrapDataKey(ctx, wrapped, encCtx)
	if err != nil {
		return nil, fmt.Errorf("keys: open: unwrap data key: %w", err)
	}
	defer clear(plain)
	if len(plain) != dataKeyLen {
		return nil, fmt.Errorf("keys: open: wrapper returned a %d-byte data key, want %d", len(plain), dataKeyLen)
	}
	aead, err := newAEAD(plain)
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}

	aad := make([]byte, 0, hdrLen+len(canon))
	aad = append(aad, sealed[:hdrLen]...)
	aad = append(aad, canon...)
	out, err := aead.Open(nil, nil, sealed[hdrLen:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrTampered)
	}
	return out, nil
}

// Ping reports whether the wrapper answers (keys/kms: DescribeKey; keys/local
// always nil). Use it in readiness checks.
func (e *Envelope) Ping(ctx context.Context) error {
	return e.w.Ping(ctx)
}

func appendDigest(dst, canon []byte) []byte {
	h := sha256.New()
	h.Write([]byte(contextDigestLabel))
	h.Write(canon)
	var sum [sha256.Size]byte
	return append(dst, h.Sum(sum[:0])[:digestLen]...)
}

// newAEAD returns AES-256-GCM with random 96-bit nonces under key. The
// cipher keeps its own expanded copy of key, so the caller may clear key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("invalid data key")
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, errors.New("cannot set up AES-GCM")
	}
	return aead, nil
}
