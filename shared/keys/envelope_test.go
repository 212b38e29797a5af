package keys_test

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/keystest"
	"github.com/certfleet/certfleet/shared/keys/local"
)

// recorder wraps a real KeyWrapper and keeps every plaintext data key it
// hands out, so tests can check that the envelope clears them.
type recorder struct {
	keys.KeyWrapper
	mu    sync.Mutex
	plain [][]byte
}

func (r *recorder) NewDataKey(ctx context.Context, encCtx map[string]string) ([]byte, []byte, error) {
	p, w, err := r.KeyWrapper.NewDataKey(ctx, encCtx)
	r.keep(p)
	return p, w, err
}

func (r *recorder) UnwrapDataKey(ctx context.Context, wrapped []byte, encCtx map[string]string) ([]byte, error) {
	p, err := r.KeyWrapper.UnwrapDataKey(ctx, wrapped, encCtx)
	r.keep(p)
	return p, err
}

func (r *recorder) keep(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plain = append(r.plain, p)
}

func localWrapper(t testing.TB) *local.Wrapper {
	t.Helper()
	w, err := local.Open(filepath.Join(t.TempDir(), "master.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestEnvelopeConformance(t *testing.T) {
	keystest.Run(t, keys.NewEnvelope(localWrapper(t)))
}

func TestEnvelopeLayout(t *testing.T) {
	ctx := context.Background()
	var w keys.KeyWrapper = localWrapper(t)
	_, wrapped, err := w.NewDataKey(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := keys.NewEnvelope(w)
	for _, size := range []int{0, 5, 1000} {
		sealed, err := env.Seal(ctx, make([]byte, size), map[string]string{"id": "1"})
		if err != nil {
			t.Fatal(err)
		}
		if sealed[0] != 1 {
			t.Errorf("version byte = %d, want 1", sealed[0])
		}
		n := int(binary.BigEndian.Uint16(sealed[17:19]))
		if n != len(wrapped) {
			t.Errorf("wrapped-key length field = %d, want %d", n, len(wrapped))
		}
		if want := 19 + n + 12 + size + 16; len(sealed) != want {
			t.Errorf("sealed %d bytes into %d, want %d", size, len(sealed), want)
		}
	}
}

func TestEnvelopeClearsDataKeys(t *testing.T) {
	ctx := context.Background()
	r := &recorder{KeyWrapper: localWrapper(t)}
	env := keys.NewEnvelope(r)
	sealed, err := env.Seal(ctx, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Open(ctx, sealed, nil); err != nil {
		t.Fatal(err)
	}
	if len(r.plain) != 2 {
		t.Fatalf("wrapper handed out %d data keys, want 2", len(r.plain))
	}
	for i, p := range r.plain {
		for _, b := range p {
			if b != 0 {
				t.Fatalf("data key %d was not cleared", i)
			}
		}
	}
}

var errDown = errors.New("wrapper down")

type failing struct{ keys.KeyWrapper }

func (failing) NewDataKey(context.Context, map[string]string) ([]byte, []byte, error) {
	return nil, nil, errDown
}

func (failing) UnwrapDataKey(context.Context, []byte, map[string]string) ([]byte, error) {
	return nil, errDown
}

func (failing) Ping(context.Context) error { return errDown }

type shortKey struct{ keys.KeyWrapper }

func (shortKey) NewDataKey(context.Context, map[string]string) ([]byte, []byte, error) {
	return make([]byte, 16), []byte{1}, nil
}

func (shortKey) UnwrapDataKey(context.Context, []byte, map[string]string) ([]byte, error) {
	return make([]byte, 16), nil
}

func TestEnvelopeWrapperErrors(t *testing.T) {
	ctx := context.Background()
	good := keys.NewEnvelope(localWrapper(t))
	sealed, err := good.Seal(ctx, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}

	bad := keys.NewEnvelope(failing{})
	if _, err := bad.Seal(ctx, []byte("x"), nil); !errors.Is(err, errDown) {
		t.Errorf("Seal: %v, want the wrapper's error", err)
	}
	if _, err := bad.Open(ctx, sealed, nil); !errors.Is(err, errDown) {
		t.Errorf("Open: %v, want the wrapper's error", err)
	}
	if err := bad.Ping(ctx); !errors.Is(err, errDown) {
		t.Errorf("Ping: %v, want the wrapper's error", err)
	}
	// A wrong context is caught before the wrapper is asked.
	if _, err := bad.Open(ctx, sealed, map[string]string{"x": "y"}); !errors.Is(err, keys.ErrWrongContext) {
		t.Errorf("Open under another context: %v, want ErrWrongContext", err)
	}

	short := keys.NewEnvelope(shortKey{})
	if _, err := short.Seal(ctx, []byte("x"), nil); err == nil || errors.Is(err, keys.ErrTampered) {
		t.Errorf("Seal with a 16-byte data key: %v, want a plain error", err)
	}
	if _, err := short.Open(ctx, sealed, nil); err == nil {
		t.Error("Open with a 16-byte data key succeeded")
	}
	if err := good.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func BenchmarkEnvelopeLocal(b *testing.B) {
	keystest.Benchmark(b, keys.NewEnvelope(localWrapper(b)))
}
