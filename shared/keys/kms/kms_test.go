package kms_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/certfleet/certfleet/shared/internal/mototest"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/keystest"
	"github.com/certfleet/certfleet/shared/keys/kms"
)

func TestMain(m *testing.M) {
	os.Exit(mototest.Run(m))
}

func client(tb testing.TB) *awskms.Client {
	tb.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return awskms.NewFromConfig(cfg)
}

func createKey(tb testing.TB, c *awskms.Client) string {
	tb.Helper()
	out, err := c.CreateKey(context.Background(), &awskms.CreateKeyInput{
		Description: aws.String("certfleet keys/kms test"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

func TestConformance(t *testing.T) {
	c := client(t)
	w := kms.New(c, createKey(t, c))
	if err := w.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	keystest.Run(t, keys.NewEnvelope(w))
}

func TestConformanceByAlias(t *testing.T) {
	c := client(t)
	id := createKey(t, c)
	alias := "alias/certfleet-test-" + id // unique when -count reuses moto
	if _, err := c.CreateAlias(context.Background(), &awskms.CreateAliasInput{
		AliasName:   aws.String(alias),
		TargetKeyId: aws.String(id),
	}); err != nil {
		t.Fatal(err)
	}
	env := keys.NewEnvelope(kms.New(c, alias))
	ctx := context.Background()
	encCtx := map[string]string{"table": "certs", "id": "9"}
	sealed, err := env.Seal(ctx, []byte("by alias"), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	// Sealed through the alias, opened through the key id and vice versa.
	got, err := keys.NewEnvelope(kms.New(c, id)).Open(ctx, sealed, encCtx)
	if err != nil || string(got) != "by alias" {
		t.Fatalf("open by key id: %q, %v", got, err)
	}
	if err := env.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOtherKeyCannotOpen(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	a := keys.NewEnvelope(kms.New(c, createKey(t, c)))
	b := keys.NewEnvelope(kms.New(c, createKey(t, c)))
	encCtx := map[string]string{"table": "certs", "id": "1"}
	sealed, err := a.Seal(ctx, []byte("private key"), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Open(ctx, sealed, encCtx)
	if err == nil || got != nil {
		t.Fatalf("opened a value sealed under another KMS key: %q, %v", got, err)
	}
	if !errors.Is(err, keys.ErrTampered) {
		t.Errorf("got %v, want ErrTampered", err)
	}
	t.Logf("error under the other key: %v", err)
}

func TestWrapperErrors(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	id := createKey(t, c)
	w := kms.New(c, id)

	plain, wrapped, err := w.NewDataKey(ctx, map[string]string{"id": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 32 {
		t.Fatalf("data key %d bytes", len(plain))
	}
	if got, err := w.UnwrapDataKey(ctx, wrapped, map[string]string{"id": "1"}); err != nil || string(got) != string(plain) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := w.UnwrapDataKey(ctx, wrapped, map[string]string{"id": "2"}); !errors.Is(err, keys.ErrTampered) {
		t.Errorf("unwrap under another context: %v, want ErrTampered", err)
	}
	bad := append([]byte(nil), wrapped...)
	bad[len(bad)-1] ^= 1
	if _, err := w.UnwrapDataKey(ctx, bad, map[string]string{"id": "1"}); !errors.Is(err, keys.ErrTampered) {
		t.Errorf("unwrap of an altered blob: %v, want ErrTampered", err)
	}
	if _, err := w.UnwrapDataKey(ctx, []byte("x"), nil); !errors.Is(err, keys.ErrTampered) {
		t.Errorf("unwrap of a 1-byte blob: %v, want ErrTampered", err)
	}

	missing := kms.New(c, "11111111-2222-3333-4444-555555555555")
	_, _, err = missing.NewDataKey(ctx, nil)
	if err == nil || errors.Is(err, keys.ErrTampered) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("NewDataKey with a missing key: %v, want a not-found error", err)
	}
	if err := missing.Ping(ctx); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Ping with a missing key: %v, want a not-found error", err)
	}
	if _, _, err := kms.New(c, "").NewDataKey(ctx, nil); err == nil {
		t.Error("NewDataKey with no key id succeeded")
	}

	if _, err := c.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Ping(ctx); err == nil || !strings.Contains(err.Error(), "Disabled") {
		t.Errorf("Ping with a disabled key: %v, want an error saying it is disabled", err)
	}
}

func BenchmarkSealer(b *testing.B) {
	c := client(b)
	keystest.Benchmark(b, keys.NewEnvelope(kms.New(c, createKey(b, c))))
}
