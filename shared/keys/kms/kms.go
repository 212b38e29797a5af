// Package kms is the keys.KeyWrapper of the cloud shape: AWS KMS makes each
// data key (GenerateDataKey, AES_256) and unwraps it (Decrypt), both with the
// caller's encryption context, so KMS itself enforces the binding and logs
// it in CloudTrail. The wrapped form is the KMS CiphertextBlob, unchanged.
//
// The role needs kms:GenerateDataKey and kms:Decrypt on the key, and
// kms:DescribeKey for Ping. KMS limits an encryption context to 8192
// characters in all; certfleet's contexts are a few short labels.
package kms

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/certfleet/certfleet/shared/keys"
)

const dataKeyLen = 32

// Wrapper wraps data keys with one KMS key. Safe for concurrent use.
type Wrapper struct {
	client *kms.Client
	keyID  string
}

var _ keys.KeyWrapper = (*Wrapper)(nil)

// New returns a Wrapper that uses the symmetric KMS key keyID (a key id,
// key ARN, alias name "alias/..." or alias ARN) through client. client must
// not be nil. New makes no request; call Ping to check the key.
func New(client *kms.Client, keyID string) *Wrapper {
	if client == nil {
		panic("kms: New with a nil client")
	}
	return &Wrapper{client: client, keyID: keyID}
}

// NewDataKey asks KMS for a fresh AES-256 data key bound to encCtx and
// returns its plaintext and the CiphertextBlob. Errors name the key and say
// what to fix when it does not exist, is disabled or pending deletion;
// other KMS and network errors are wrapped as they are.
func (w *Wrapper) NewDataKey(ctx context.Context, encCtx map[string]string) (plain, wrapped []byte, err error) {
	if w.keyID == "" {
		return nil, nil, errors.New("kms: no KMS key id configured")
	}
	out, err := w.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(w.keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: contextOrNil(encCtx),
	})
	if err != nil {
		return nil, nil, w.explain("GenerateDataKey", err)
	}
	if len(out.Plaintext) != dataKeyLen || len(out.CiphertextBlob) == 0 {
		clear(out.Plaintext)
		return nil, nil, fmt.Errorf("kms: GenerateDataKey with key %s returned a %d-byte data key, want %d", w.keyID, len(out.Plaintext), dataKeyLen)
	}
	return out.Plaintext, out.CiphertextBlob, nil
}

// UnwrapDataKey calls Decrypt with wrapped, encCtx and this Wrapper's key id
// (so KMS refuses blobs made under any other key). It fails with an error
// wrapping keys.ErrTampered when KMS reports the blob invalid for this key
// and context (InvalidCiphertextException), made under another key
// (IncorrectKeyException), or naming a key that does not exist or that the
// caller may not use (AccessDeniedException while this Wrapper can decrypt
// under its own key and encCtx, which it checks with one GenerateDataKey and
// one Decrypt, on that error path only). Denied access to the Wrapper's own
// key, a missing, disabled or pending-deletion key, and network errors are
// not ErrTampered: the data may be fine, the setup is not.
func (w *Wrapper) UnwrapDataKey(ctx context.Context, wrapped []byte, encCtx map[string]string) ([]byte, error) {
	if w.keyID == "" {
		return nil, errors.New("kms: no KMS key id configured")
	}
	out, err := w.decrypt(ctx, wrapped, encCtx)
	if err != nil {
		if isAccessDenied(err) && w.canDecrypt(ctx, encCtx) {
			// We may decrypt under this key and context, so the denial is
			// about the blob: it names another key, or its key reference
			// was altered.
			return nil, fmt.Errorf("kms: Decrypt: the wrapped data key refers to a KMS key other than %s: %w (%w)", w.keyID, keys.ErrTampered, err)
		}
		return nil, w.explain("Decrypt", err)
	}
	if len(out.Plaintext) != dataKeyLen {
		clear(out.Plaintext)
		return nil, fmt.Errorf("kms: Decrypt with key %s returned a %d-byte data key, want %d: %w", w.keyID, len(out.Plaintext), dataKeyLen, keys.ErrTampered)
	}
	return out.Plaintext, nil
}

// Ping calls DescribeKey and fails unless the key exists, is Enabled and is
// meant for ENCRYPT_DECRYPT.
func (w *Wrapper) Ping(ctx context.Context) error {
	if w.keyID == "" {
		return errors.New("kms: no KMS key id configured")
	}
	out, err := w.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(w.keyID)})
	if err != nil {
		return w.explain("DescribeKey", err)
	}
	md := out.KeyMetadata
	if md == nil {
		return fmt.Errorf("kms: DescribeKey with key %s returned no metadata", w.keyID)
	}
	if md.KeyState != types.KeyStateEnabled {
		return fmt.Errorf("kms: KMS key %s is %s, not Enabled; enable it (or cancel its deletion) to seal and open secrets", w.keyID, md.KeyState)
	}
	if md.KeyUsage != "" && md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		return fmt.Errorf("kms: KMS key %s has usage %s; certfleet needs a symmetric ENCRYPT_DECRYPT key", w.keyID, md.KeyUsage)
	}
	return nil
}

// explain turns a KMS error into one that names the key and the fix. The
// AWS error stays in the chain for errors.As.
func (w *Wrapper) explain(op string, err error) error {
	var (
		invalid     *types.InvalidCiphertextException
		incorrect   *types.IncorrectKeyException
		notFound    *types.NotFoundException
		disabled    *types.DisabledException
		badState    *types.KMSInvalidStateException
		unavailable *types.KeyUnavailableException
	)
	switch {
	case errors.As(err, &invalid):
		return fmt.Errorf("kms: %s: the wrapped data key is not valid for key %s and this encryption context: %w (%w)", op, w.keyID, keys.ErrTampered, err)
	case errors.As(err, &incorrect):
		return fmt.Errorf("kms: %s: the wrapped data key was made under another KMS key, not %s: %w (%w)", op, w.keyID, keys.ErrTampered, err)
	case errors.As(err, &notFound):
		return fmt.Errorf("kms: %s: KMS key %s not found; check the key id or alias and the region: %w", op, w.keyID, err)
	case errors.As(err, &disabled):
		return fmt.Errorf("kms: %s: KMS key %s is disabled; enable it to seal and open secrets: %w", op, w.keyID, err)
	case errors.As(err, &badState):
		return fmt.Errorf("kms: %s: KMS key %s cannot be used in its current state (pending deletion or import?): %w", op, w.keyID, err)
	case errors.As(err, &unavailable):
		return fmt.Errorf("kms: %s: KMS key %s is unavailable right now: %w", op, w.keyID, err)
	case isAccessDenied(err):
		return fmt.Errorf("kms: %s: access to KMS key %s denied; the role needs kms:GenerateDataKey, kms:Decrypt "+
			"and kms:DescribeKey on it (for this encryption context): %w", op, w.keyID, err)
	default:
		return fmt.Errorf("kms: %s with key %s: %w", op, w.keyID, err)
	}
}

// canDecrypt reports whether this Wrapper may make and decrypt a data key
// under its key and encCtx. KMS answers AccessDeniedException both when the
// caller lacks permission and when a ciphertext names a key the caller
// cannot use; this tells the two apart.
func (w *Wrapper) canDecrypt(ctx context.Context, encCtx map[string]string) bool {
	plain, wrapped, err := w.NewDataKey(ctx, encCtx)
	if err != nil {
		return false
	}
	clear(plain)
	out, err := w.decrypt(ctx, wrapped, encCtx)
	if err != nil {
		return false
	}
	clear(out.Plaintext)
	return true
}

func (w *Wrapper) decrypt(ctx context.Context, wrapped []byte, encCtx map[string]string) (*kms.DecryptOutput, error) {
	return w.client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob:    wrapped,
		KeyId:             aws.String(w.keyID),
		EncryptionContext: contextOrNil(encCtx),
	})
}

func isAccessDenied(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "AccessDeniedException"
}

// contextOrNil sends no EncryptionContext for an empty context, so nil and
// empty maps are the same context on the wire as well.
func contextOrNil(encCtx map[string]string) map[string]string {
	if len(encCtx) == 0 {
		return nil
	}
	return encCtx
}
