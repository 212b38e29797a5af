// Package local is the keys.KeyWrapper of the local shape: data keys are
// wrapped with AES-256-GCM under a 32-byte master key kept in a file.
//
// The file holds the key as 64 lowercase hexadecimal characters and a
// newline, and must be readable by its owner only (mode 0600 or 0400).
// Everything sealed through this wrapper is lost if the file is lost: back
// it up with the data directory, and keep the backup as private as the file.
//
// Wrapped data key format, version 1 (65 bytes):
//
//	offset  size  field
//	0       1     format version, 1
//	1       4     master key id: SHA-256(keyIDLabel || master key)[:4]
//	5       12    AES-GCM nonce, random
//	17      48    AES-256-GCM ciphertext of the 32-byte data key, then the tag
//
// The GCM additional data is bytes 0 to 5 followed by the canonical encoding
// of the encryption context (package keys/internal/encctx), so a wrapped key
// only unwraps under the context it was made for. The key id lets an error
// say "wrapped under a different master key" instead of only "tampered"; 32
// bits of a hash reveal nothing useful about a 256-bit key. With random
// nonces one master key may wrap up to 2^32 data keys.
package local

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/internal/encctx"
)

const (
	masterKeyLen  = 32
	dataKeyLen    = 32
	keyIDLen      = 4
	wrapVersion   = 1
	wrapHeaderLen = 1 + keyIDLen
	wrappedLen    = wrapHeaderLen + 12 + dataKeyLen + 16
	maxFileSize   = 4096

	keyIDLabel = "certfleet/keys/local/v1/key-id\x00"
)

// Wrapper wraps data keys under the master key read from a file. Safe for
// concurrent use.
type Wrapper struct {
	aead  cipher.AEAD
	keyID [keyIDLen]byte
}

var _ keys.KeyWrapper = (*Wrapper)(nil)

// Open reads the master key file at path and returns a Wrapper using it.
//
// If the file does not exist and create is true, Open makes a new random key
// and writes it atomically with mode 0600 (a temporary file in the same
// directory, synced, then linked into place), creating the directory with
// mode 0700 if needed. If another process creates the file at the same
// moment, both end up using the one that landed first. If the file does not
// exist and create is false, the error wraps keys.ErrNoMasterKey.
//
// Other errors: the file grants its group or others any access (fix: chmod
// 600), is not a regular file, or does not hold exactly 32 hex-encoded
// bytes. Errors name the path but never include the file's contents.
func Open(path string, create bool) (*Wrapper, error) {
	if path == "" {
		return nil, errors.New("local: master key file path is empty")
	}
	key, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("local: master key file %s does not exist: %w; everything sealed with that key "+
				"cannot be opened without it, so restore the file from backup (make a new key only for a new installation)",
				path, keys.ErrNoMasterKey)
		}
		if err := createKeyFile(path); err != nil {
			return nil, err
		}
		key, err = readKeyFile(path)
	}
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newWrapper(key)
}

func newWrapper(key []byte) (*Wrapper, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("local: invalid master key")
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, errors.New("local: cannot set up AES-GCM")
	}
	w := &Wrapper{aead: aead}
	h := sha256.New()
	h.Write([]byte(keyIDLabel))
	h.Write(key)
	copy(w.keyID[:], h.Sum(nil))
	return w, nil
}

// KeyID returns a short public fingerprint of the master key (8 hex
// characters), for logs and for telling key files apart. It is not secret.
func (w *Wrapper) KeyID() string {
	return hex.EncodeToString(w.keyID[:])
}

// NewDataKey returns a fresh random 32-byte data key and its 65-byte wrapped
// form bound to encCtx. It does no I/O and only fails if ctx is done.
func (w *Wrapper) NewDataKey(ctx context.Context, encCtx map[string]string) (plain, wrapped []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("local: %w", err)
	}
	plain = make([]byte, dataKeyLen)
	rand.Read(plain)
	hdr := w.header()
	wrapped = make([]byte, 0, wrappedLen)
	wrapped = append(wrapped, hdr...)
	wrapped = w.aead.Seal(wrapped, nil, plain, encctx.Append(hdr, encCtx))
	return plain, wrapped, nil
}

// UnwrapDataKey returns the data key inside wrapped. It fails with an error
// wrapping keys.ErrTampered when wrapped has the wrong length or version,
// was made under another master key, was altered, or was bound to another
// encryption context. It does no I/O and also fails if ctx is done.
func (w *Wrapper) UnwrapDataKey(ctx context.Context, wrapped []byte, encCtx map[string]string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	if len(wrapped) != wrappedLen {
		return nil, fmt.Errorf("local: wrapped data key is %d bytes, want %d: %w", len(wrapped), wrappedLen, keys.ErrTampered)
	}
	if wrapped[0] != wrapVersion {
		return nil, fmt.Errorf("local: wrapped data key has unknown version %d: %w", wrapped[0], keys.ErrTampered)
	}
	if !bytes.Equal(wrapped[1:wrapHeaderLen], w.keyID[:]) {
		return nil, fmt.Errorf("local: data key was wrapped under master key %x, not this file's key %s: %w",
			wrapped[1:wrapHeaderLen], w.KeyID(), keys.ErrTampered)
	}
	aad := encctx.Append(w.header(), encCtx)
	plain, err := w.aead.Open(nil, nil, wrapped[wrapHeaderLen:], aad)
	if err != nil {
		return nil, fmt.Errorf("local: wrapped data key failed authentication: %w", keys.ErrTampered)
	}
	return plain, nil
}

// Ping returns nil: the key is in memory.
func (w *Wrapper) Ping(context.Context) error { return nil }

func (w *Wrapper) header() []byte {
	hdr := make([]byte, 0, wrapHeaderLen)
	hdr = append(hdr, wrapVersion)
	return append(hdr, w.keyID[:]...)
}

// readKeyFile returns the decoded key, or an error satisfying
// errors.Is(err, fs.ErrNotExist) when the file is missing.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("local: open master key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("local: stat master key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("local: master key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("local: master key file %s has mode %04o, so its group or others can access it; "+
			"run `chmod 600 %s` (and check who may have read it)", path, perm, path)
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("local: read master key file %s: %w", path, err)
	}
	defer clear(buf)
	text := bytes.TrimSpace(buf)
	if len(buf) > maxFileSize || len(text) != hex.EncodedLen(masterKeyLen) {
		return nil, fmt.Errorf("local: master key file %s is malformed: want %d hexadecimal characters (a %d-byte key), got %d characters",
			path, hex.EncodedLen(masterKeyLen), masterKeyLen, len(text))
	}
	key := make([]byte, masterKeyLen)
	if _, err := hex.Decode(key, text); err != nil {
		clear(key)
		return nil, fmt.Errorf("local: master key file %s is malformed: it is not hexadecimal", path)
	}
	return key, nil
}

// createKeyFile writes a new random key to path without ever exposing a
// partial file there. An existing file at path is left alone.
func createKeyFile(path string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local: create master key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("local: create master key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)

	key := make([]byte, masterKeyLen)
	rand.Read(key)
	text := hex.AppendEncode(make([]byte, 0, hex.EncodedLen(masterKeyLen)+1), key)
	text = append(text, '\n')
	clear(key)
	_, werr := tmp.Write(text)
	clear(text)
	if werr == nil {
		werr = tmp.Chmod(0o600)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("local: write master key file: %w", werr)
	}

	// Link fails if path exists, so a concurrent creator's key is never
	// replaced. Where hard links are unsupported, fall back to rename.
	if lerr := os.Link(tmpName, path); lerr != nil {
		if errors.Is(lerr, fs.ErrExist) {
			return nil
		}
		if _, serr := os.Lstat(path); serr == nil {
			return nil
		}
		if rerr := os.Rename(tmpName, path); rerr != nil {
			return fmt.Errorf("local: install master key file: %w", rerr)
		}
	}
	syncDir(dir)
	return nil
}

// syncDir makes the new directory entry durable where the platform allows.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
