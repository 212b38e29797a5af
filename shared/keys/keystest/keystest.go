// Package keystest is the conformance suite for keys.Sealer: every Sealer
// (in practice keys.NewEnvelope over each KeyWrapper adapter) runs Run in
// its tests and Benchmark in its benchmarks.
//
// The suite only needs the Sealer. Where it reports which part of a sealed
// value it altered, it names the regions of the version-1 envelope format
// documented in package keys; the assertions themselves hold for any Sealer
// whose first byte is a format version.
package keystest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/keys"
)

// Run checks the keys.Sealer contract against s: round trips, fresh
// randomness per Seal, context binding, tamper and truncation detection,
// rejection of garbage, and concurrent use. s must be usable for the whole
// test; Run makes a few hundred Seal and Open calls.
func Run(t *testing.T, s keys.Sealer) {
	t.Helper()
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, s) })
	t.Run("NilAndEmptyContextAreEqual", func(t *testing.T) { testNilEmptyContext(t, s) })
	t.Run("InputsNotChangedOrAliased", func(t *testing.T) { testNoAliasing(t, s) })
	t.Run("SealsDiffer", func(t *testing.T) { testSealsDiffer(t, s) })
	t.Run("WrongContext", func(t *testing.T) { testWrongContext(t, s) })
	t.Run("FlippedByte", func(t *testing.T) { testFlippedByte(t, s) })
	t.Run("Truncated", func(t *testing.T) { testTruncated(t, s) })
	t.Run("Extended", func(t *testing.T) { testExtended(t, s) })
	t.Run("UnknownVersion", func(t *testing.T) { testUnknownVersion(t, s) })
	t.Run("Garbage", func(t *testing.T) { testGarbage(t, s) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, s) })
}

// Benchmark measures Seal and Open of a 256-byte secret under a two-entry
// context, as sub-benchmarks "Seal" and "Open".
func Benchmark(b *testing.B, s keys.Sealer) {
	ctx := context.Background()
	secret := bytes.Repeat([]byte{0x5a}, 256)
	encCtx := map[string]string{"table": "certs", "id": "42"}
	b.Run("Seal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(secret)))
		for b.Loop() {
			if _, err := s.Seal(ctx, secret, encCtx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Open", func(b *testing.B) {
		sealed, err := s.Seal(ctx, secret, encCtx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(secret)))
		for b.Loop() {
			if _, err := s.Open(ctx, sealed, encCtx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var testCtx = map[string]string{"table": "certs", "id": "42"}

func seal(t *testing.T, s keys.Sealer, plaintext []byte, encCtx map[string]string) []byte {
	t.Helper()
	sealed, err := s.Seal(context.Background(), plaintext, encCtx)
	if err != nil {
		t.Fatalf("Seal(%d bytes, %v): %v", len(plaintext), encCtx, err)
	}
	return sealed
}

func random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

func testRoundTrip(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	for _, size := range []int{0, 1, 32, 64 << 10} {
		for _, encCtx := range []map[string]string{nil, testCtx, {"k": "v", "a": "", "unicode ключ": "值"}} {
			plaintext := random(size)
			sealed := seal(t, s, plaintext, encCtx)
			if size >= 16 && bytes.Contains(sealed, plaintext) {
				t.Errorf("sealed value of %d bytes contains the plaintext", size)
			}
			got, err := s.Open(ctx, sealed, maps.Clone(encCtx))
			if err != nil {
				t.Fatalf("Open(%d bytes, %v): %v", size, encCtx, err)
			}
			if !bytes.Equal(got, plaintext) {
				t.Fatalf("Open(%d bytes, %v) returned different bytes", size, encCtx)
			}
		}
	}
}

func testNilEmptyContext(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	sealed := seal(t, s, []byte("secret"), nil)
	if got, err := s.Open(ctx, sealed, map[string]string{}); err != nil || string(got) != "secret" {
		t.Fatalf("sealed with nil context, Open with empty map: %q, %v", got, err)
	}
	sealed = seal(t, s, []byte("secret"), map[string]string{})
	if got, err := s.Open(ctx, sealed, nil); err != nil || string(got) != "secret" {
		t.Fatalf("sealed with empty map, Open with nil context: %q, %v", got, err)
	}
}

func testNoAliasing(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	plaintext := []byte("do not touch")
	encCtx := map[string]string{"table": "certs", "id": "7"}
	sealed := seal(t, s, plaintext, encCtx)
	if string(plaintext) != "do not touch" || len(encCtx) != 2 || encCtx["id"] != "7" {
		t.Fatal("Seal changed its plaintext or context argument")
	}
	orig := bytes.Clone(sealed)
	got, err := s.Open(ctx, sealed, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sealed, orig) {
		t.Fatal("Open changed its input")
	}
	for i := range got {
		got[i] = 0
	}
	if !bytes.Equal(sealed, orig) {
		t.Fatal("Open's result aliases its input")
	}
	if again, err := s.Open(ctx, sealed, encCtx); err != nil || string(again) != "do not touch" {
		t.Fatalf("second Open: %q, %v", again, err)
	}
}

func testSealsDiffer(t *testing.T, s keys.Sealer) {
	for _, plaintext := range [][]byte{nil, []byte("same secret")} {
		a := seal(t, s, plaintext, testCtx)
		b := seal(t, s, plaintext, testCtx)
		if bytes.Equal(a, b) {
			t.Fatalf("two seals of the same %d-byte plaintext are equal", len(plaintext))
		}
	}
}

func testWrongContext(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	base := map[string]string{"table": "certs", "id": "42"}
	cases := []struct {
		name      string
		seal, use map[string]string
	}{
		{"other value", base, map[string]string{"table": "certs", "id": "43"}},
		{"other key", base, map[string]string{"table": "certs", "ID": "42"}},
		{"values swapped", base, map[string]string{"table": "42", "id": "certs"}},
		{"extra key", base, map[string]string{"table": "certs", "id": "42", "tenant": "a"}},
		{"missing key", base, map[string]string{"table": "certs"}},
		{"nil instead", base, nil},
		{"some instead of nil", nil, base},
		{"empty value vs absent", map[string]string{"a": ""}, nil},
		{"boundary moved", map[string]string{"ab": "c"}, map[string]string{"a": "bc"}},
		{"pairs merged", map[string]string{"a": "b", "c": "d"}, map[string]string{"a": "bcd"}},
		{"separator in value", map[string]string{"a": "b=c"}, map[string]string{"a=b": "c"}},
		{"NUL in value", map[string]string{"a": "b\x00c\x00d"}, map[string]string{"a": "b", "c": "d"}},
	}
	for _, c := range cases {
		sealed := seal(t, s, []byte("secret"), c.seal)
		got, err := s.Open(ctx, sealed, c.use)
		if !errors.Is(err, keys.ErrWrongContext) {
			t.Errorf("%s: sealed under %q, opened under %q: got %q, %v; want ErrWrongContext", c.name, c.seal, c.use, got, err)
		}
		if got != nil {
			t.Errorf("%s: Open returned data with its error", c.name)
		}
	}
}

// region names the part of a version-1 envelope that holds byte i, for
// messages only.
func region(sealed []byte, i int) string {
	const digestEnd, lenEnd = 17, 19
	switch {
	case i == 0:
		return "version"
	case i < digestEnd:
		return "context digest"
	case i < lenEnd:
		return "wrapped-key length"
	}
	if len(sealed) < lenEnd {
		return "?"
	}
	wrappedEnd := lenEnd + int(sealed[17])<<8 + int(sealed[18])
	switch {
	case i < wrappedEnd:
		return "wrapped key"
	case i < wrappedEnd+12:
		return "nonce"
	case i < len(sealed)-16:
		return "ciphertext"
	default:
		return "tag"
	}
}

func testFlippedByte(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	plaintext := []byte("a 32-byte secret for flip tests!")
	sealed := seal(t, s, plaintext, testCtx)
	seen := map[string]int{}
	// Every byte of a small value is altered once; a very long wrapped key
	// is sampled so the suite stays quick against a remote wrapper.
	step := max(1, len(sealed)/512)
	for i := 0; i < len(sealed); i++ {
		if i >= 32 && i < len(sealed)-64 && i%step != 0 {
			continue
		}
		// One bit per byte, a different bit position from byte to byte.
		mask := byte(1) << (i % 8)
		bad := bytes.Clone(sealed)
		bad[i] ^= mask
		got, err := s.Open(ctx, bad, testCtx)
		if err == nil {
			t.Fatalf("byte %d (%s) ^ %#x: Open succeeded", i, region(sealed, i), mask)
		}
		if !errors.Is(err, keys.ErrTampered) && !errors.Is(err, keys.ErrWrongContext) {
			t.Errorf("byte %d (%s) ^ %#x: %v; want ErrTampered or ErrWrongContext", i, region(sealed, i), mask, err)
		}
		if got != nil {
			t.Errorf("byte %d (%s): Open returned data with its error", i, region(sealed, i))
		}
		seen[region(sealed, i)]++
	}
	t.Logf("sealed %d bytes; bytes altered per region: %v", len(sealed), seen)
	if got, err := s.Open(ctx, sealed, testCtx); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func testTruncated(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	sealed := seal(t, s, []byte("a secret to cut short"), testCtx)
	for n := 0; n < len(sealed); n++ {
		cut := bytes.Clone(sealed[:n])
		got, err := s.Open(ctx, cut, testCtx)
		if !errors.Is(err, keys.ErrTampered) {
			t.Errorf("first %d of %d bytes (cut in %s): got %v; want ErrTampered", n, len(sealed), region(sealed, n), err)
		}
		if got != nil {
			t.Errorf("first %d bytes: Open returned data with its error", n)
		}
	}
}

func testExtended(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	sealed := seal(t, s, []byte("a secret"), testCtx)
	for _, tail := range [][]byte{{0}, []byte("more"), make([]byte, 100)} {
		long := append(bytes.Clone(sealed), tail...)
		if _, err := s.Open(ctx, long, testCtx); !errors.Is(err, keys.ErrTampered) {
			t.Errorf("%d bytes appended: got %v; want ErrTampered", len(tail), err)
		}
	}
}

func testUnknownVersion(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	sealed := seal(t, s, []byte("a secret"), testCtx)
	for _, v := range []byte{0, 2, 3, 0x7f, 0x80, 0xff} {
		if v == sealed[0] {
			continue
		}
		bad := bytes.Clone(sealed)
		bad[0] = v
		if _, err := s.Open(ctx, bad, testCtx); !errors.Is(err, keys.ErrTampered) {
			t.Errorf("version byte %d: got %v; want ErrTampered", v, err)
		}
	}
}

func testGarbage(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	inputs := [][]byte{
		nil,
		{},
		[]byte("hello"),
		[]byte("not a sealed value at all, just some text of moderate length"),
		make([]byte, 64),
		bytes.Repeat([]byte{0xff}, 300),
		{1},
		append([]byte{1}, make([]byte, 18)...),
	}
	// A fixed seed keeps the inputs, and so the outcome, the same every run.
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 16, 19, 20, 47, 48, 100, 255, 1000, 4096} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		got, err := s.Open(ctx, in, testCtx)
		if !errors.Is(err, keys.ErrTampered) {
			t.Errorf("garbage %s: got %v; want ErrTampered", describe(in), err)
		}
		if got != nil {
			t.Errorf("garbage %s: Open returned data with its error", describe(in))
		}
	}
}

func describe(b []byte) string {
	if len(b) > 8 {
		return fmt.Sprintf("%d bytes %x...", len(b), b[:8])
	}
	return fmt.Sprintf("%d bytes %x", len(b), b)
}

func testConcurrent(t *testing.T, s keys.Sealer) {
	ctx := context.Background()
	shared := seal(t, s, []byte("shared secret"), testCtx)
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				encCtx := map[string]string{"table": "certs", "id": fmt.Sprintf("%d-%d", w, i)}
				plaintext := fmt.Appendf(nil, "secret %d/%d", w, i)
				sealed, err := s.Seal(ctx, plaintext, encCtx)
				if err != nil {
					t.Errorf("worker %d: Seal: %v", w, err)
					return
				}
				got, err := s.Open(ctx, sealed, encCtx)
				if err != nil || !bytes.Equal(got, plaintext) {
					t.Errorf("worker %d: Open own value: %q, %v", w, got, err)
					return
				}
				got, err = s.Open(ctx, shared, testCtx)
				if err != nil || string(got) != "shared secret" {
					t.Errorf("worker %d: Open shared value: %q, %v", w, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
