package local_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/keystest"
	"github.com/certfleet/certfleet/shared/keys/local"
)

func open(t testing.TB, path string, create bool) *local.Wrapper {
	t.Helper()
	w, err := local.Open(path, create)
	if err != nil {
		t.Fatalf("Open(%s, %v): %v", path, create, err)
	}
	return w
}

func TestConformance(t *testing.T) {
	w := open(t, filepath.Join(t.TempDir(), "master.key"), true)
	keystest.Run(t, keys.NewEnvelope(w))
}

func BenchmarkSealer(b *testing.B) {
	w := open(b, filepath.Join(b.TempDir(), "master.key"), true)
	keystest.Benchmark(b, keys.NewEnvelope(w))
}

func TestCreate(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data", "secrets")
	path := filepath.Join(dir, "master.key")
	open(t, path, true)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	for _, d := range []string{filepath.Join(base, "data"), dir} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := di.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("directory %s mode %04o, want 0700", d, perm)
		}
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text, ok := strings.CutSuffix(string(content), "\n")
	if !ok || len(text) != 64 {
		t.Fatalf("key file holds %d bytes, want 64 hex characters and a newline", len(content))
	}
	if _, err := hex.DecodeString(text); err != nil {
		t.Fatalf("key file is not hex: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the key file (no temporary files left)", names)
	}
}

func TestReopenSameKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "master.key")
	w1 := open(t, path, true)
	encCtx := map[string]string{"table": "acme_accounts", "id": "7"}
	sealed, err := keys.NewEnvelope(w1).Seal(ctx, []byte("account key"), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	for _, create := range []bool{false, true} {
		w2 := open(t, path, create)
		if w2.KeyID() != w1.KeyID() {
			t.Errorf("reopened (create=%v) key id %s, want %s", create, w2.KeyID(), w1.KeyID())
		}
		got, err := keys.NewEnvelope(w2).Open(ctx, sealed, encCtx)
		if err != nil || string(got) != "account key" {
			t.Fatalf("open after reopen (create=%v): %q, %v", create, got, err)
		}
	}
}

func TestMissingWithoutCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nothing", "master.key")
	_, err := local.Open(path, false)
	if !errors.Is(err, keys.ErrNoMasterKey) {
		t.Fatalf("got %v, want ErrNoMasterKey", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "cannot be opened without it") {
		t.Errorf("error %q should name the path and say sealed data needs the key", msg)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open without create made the directory: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	open(t, path, true)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o700 | 0o001} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := local.Open(path, false)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: got %v, want an error telling to chmod 600", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := local.Open(path, false); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}

func TestMalformed(t *testing.T) {
	dir := t.TempDir()
	valid := strings.Repeat("ab", 32)
	cases := map[string]string{
		"empty":     "",
		"short":     strings.Repeat("ab", 16) + "\n",
		"long":      strings.Repeat("ab", 33) + "\n",
		"not hex":   strings.Repeat("zz", 32) + "\n",
		"raw bytes": string(make([]byte, 32)),
		"two keys":  valid + "\n" + valid + "\n",
		"huge":      strings.Repeat("a", 1<<20),
	}
	for name, content := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := local.Open(path, true)
		if err == nil {
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: %v, want a malformed-file error", name, err)
		}
		if len(content) >= 8 && strings.Contains(err.Error(), content[:8]) {
			t.Errorf("%s: error quotes the file's contents: %v", name, err)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("%s: Open changed the file", name)
		}
	}
	// Surrounding whitespace is tolerated (editors add newlines).
	path := filepath.Join(dir, "spaced")
	if err := os.WriteFile(path, []byte("  "+valid+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open(t, path, false)
}

func TestNotARegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(path, true); err == nil {
		t.Fatal("Open of a directory succeeded")
	}
	if _, err := local.Open("", true); err == nil {
		t.Fatal("Open of an empty path succeeded")
	}
}

func TestOtherMasterKeyCannotOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := open(t, filepath.Join(dir, "a.key"), true)
	b := open(t, filepath.Join(dir, "b.key"), true)
	if a.KeyID() == b.KeyID() {
		t.Fatal("two new keys have the same id")
	}
	encCtx := map[string]string{"table": "certs", "id": "1"}
	sealed, err := keys.NewEnvelope(a).Seal(ctx, []byte("private key"), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := keys.NewEnvelope(b).Open(ctx, sealed, encCtx)
	if !errors.Is(err, keys.ErrTampered) || got != nil {
		t.Fatalf("open under another master key: %q, %v; want ErrTampered", got, err)
	}
	if !strings.Contains(err.Error(), a.KeyID()) || !strings.Contains(err.Error(), b.KeyID()) {
		t.Errorf("error %q should name both master key ids", err)
	}
}

func TestWrapperBindsContext(t *testing.T) {
	ctx := context.Background()
	w := open(t, filepath.Join(t.TempDir(), "master.key"), true)
	plain, wrapped, err := w.NewDataKey(ctx, map[string]string{"id": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 32 || len(wrapped) != 65 {
		t.Fatalf("data key %d bytes, wrapped %d; want 32 and 65", len(plain), len(wrapped))
	}
	got, err := w.UnwrapDataKey(ctx, wrapped, map[string]string{"id": "1"})
	if err != nil || string(got) != string(plain) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := w.UnwrapDataKey(ctx, wrapped, map[string]string{"id": "2"}); !errors.Is(err, keys.ErrTampered) {
		t.Errorf("unwrap under another context: %v, want ErrTampered", err)
	}
	for i := range wrapped {
		bad := append([]byte(nil), wrapped...)
		bad[i] ^= 0x10
		if _, err := w.UnwrapDataKey(ctx, bad, map[string]string{"id": "1"}); !errors.Is(err, keys.ErrTampered) {
			t.Errorf("byte %d altered: %v, want ErrTampered", i, err)
		}
	}
	if _, err := w.UnwrapDataKey(ctx, wrapped[:64], map[string]string{"id": "1"}); !errors.Is(err, keys.ErrTampered) {
		t.Errorf("truncated: %v, want ErrTampered", err)
	}
	if err := w.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := w.NewDataKey(cancelled, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("NewDataKey with a cancelled context: %v", err)
	}
}

func TestConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "master.key")
	const n = 16
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			w, err := local.Open(path, true)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			ids[i] = w.KeyID()
		})
	}
	wg.Wait()
	for i, id := range ids {
		if id != ids[0] {
			t.Fatalf("Open %d got key %s, Open 0 got %s: concurrent creators disagree", i, id, ids[0])
		}
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file", len(entries))
	}
}
