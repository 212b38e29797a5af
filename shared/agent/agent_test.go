package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"
)

func TestScriptVariant(t *testing.T) {
	for in, want := range map[string]string{
		"echo hi": "echo hi",
		"@@@BEGIN windows.cmd\necho no\n@@@END\n@@@BEGIN posix.sh\necho a\necho b\n@@@END\n": "echo a\necho b",
		"@@@BEGIN windows.pwsh\nWrite-Host no\n@@@END":                                       "",
	} {
		if got := scriptVariant(in); got != want {
			t.Errorf("scriptVariant(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenMaterialsRejects(t *testing.T) {
	pk, sk, _ := box.GenerateKey(rand.Reader)
	other, _, _ := box.GenerateKey(rand.Reader)
	b64 := base64.StdEncoding.EncodeToString
	if _, err := openMaterials(materials{Scheme: []byte(`"aead"`)}, pk, sk); err == nil || !strings.Contains(err.Error(), "enc_scheme") {
		t.Errorf("scheme aead: %v", err)
	}
	if _, err := openMaterials(materials{KeyFP: b64(make([]byte, 32))}, pk, sk); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Errorf("fingerprint: %v", err)
	}
	enc, _ := box.SealAnonymous(nil, make([]byte, 32), other, rand.Reader)
	m := materials{EncDataKey: b64(enc), EncPrivKey: b64([]byte("x")), Nonce: b64(make([]byte, 12)), Tag: b64(make([]byte, 16))}
	if _, err := openMaterials(m, pk, sk); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Errorf("another device's wrap: %v", err)
	}
}

func TestRunScriptTimeout(t *testing.T) {
	var out bytes.Buffer
	a := New(t.TempDir(), &out)
	a.ScriptTimeout = 200 * time.Millisecond
	script := "sleep 5"
	start := time.Now()
	err := a.runScript(context.Background(), &installConfig{AfterUpdateScript: &script}, "cert.updated")
	if err == nil || !strings.Contains(err.Error(), "timed out") || time.Since(start) > 3*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
	marker := filepath.Join(t.TempDir(), "m")
	script = `printf '%s' "$1" > '` + marker + `'; exit 3`
	if err := a.runScript(context.Background(), &installConfig{AfterUpdateScript: &script}, "cert.updated"); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("exit 3: %v", err)
	}
}
