package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"os"
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
	err := a.runScript(context.Background(), &installConfig{AfterUpdateScript: &script}, "cert.updated", nil)
	if err == nil || !strings.Contains(err.Error(), "timed out") || time.Since(start) > 3*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
	marker := filepath.Join(t.TempDir(), "m")
	script = `printf '%s' "$1" > '` + marker + `'; exit 3`
	if err := a.runScript(context.Background(), &installConfig{AfterUpdateScript: &script}, "cert.updated", nil); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("exit 3: %v", err)
	}
}

// TestExecItemGuards covers what the server never sends (it refuses such
// configs) but the agent guards anyway: an exec item on a certificate is
// skipped with a line, an import_ca item needs ob_type "ca" and an ob_id,
// run_as other than the agent's user fails, a malformed cmd fails.
func TestExecItemGuards(t *testing.T) {
	var out bytes.Buffer
	a := New(t.TempDir(), &out)
	dir := t.TempDir()
	never := filepath.Join(dir, "never")
	cfg := &installConfig{Installs: []installItem{
		{ID: "cert-hook", Type: "exec", ObType: "cert", ObID: 7, Cmd: []byte(`"touch '` + never + `'"`)},
		{ID: "other-user", Type: "exec", Cmd: []byte(`["/bin/true"]`), RunAs: "certfleet-no-such-user", ContinueOnError: true},
		{ID: "bad-cmd", Type: "exec", Cmd: []byte(`{"x":1}`)},
	}}
	err := a.runExecItems(context.Background(), cfg, applied{config: true}, nil)
	if err == nil || !strings.Contains(err.Error(), `install item "bad-cmd": cmd is neither a string nor an array`) {
		t.Fatalf("bad cmd: %v\n%s", err, out.String())
	}
	for _, want := range []string{`exec item "cert-hook" skipped: exec items on a certificate never run`,
		`exec item "other-user": run_as "certfleet-no-such-user": the agent runs as`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(never); !os.IsNotExist(err) {
		t.Fatalf("the exec item on a certificate ran: %v", err)
	}
	for _, it := range []installItem{{ID: "x", Type: "import_ca", ObType: "cert", ObID: 3}, {ID: "x", Type: "import_ca", ObType: "ca"}} {
		if err := it.badImportCA(); err == nil || !strings.Contains(err.Error(), `import_ca needs ob_type "ca" and an ob_id`) {
			t.Errorf("%+v: %v", it, err)
		}
	}
	if err := (installItem{ID: "x", Type: "import_ca", ObType: "ca", ObID: 3}).badImportCA(); err != nil {
		t.Error(err)
	}
}

// TestCommandOutputBounded checks a command's output reaches the agent's
// output prefixed, line by line, and stops at maxCommandOutput.
func TestCommandOutputBounded(t *testing.T) {
	var out bytes.Buffer
	a := New(t.TempDir(), &out)
	argv := []string{"/bin/sh", "-c", "echo first; echo second >&2; yes line | head -c 200000"}
	if err := a.runCommand(context.Background(), `exec item "loud"`, argv, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if lines[0] != `exec item "loud": first` || lines[1] != `exec item "loud": second` ||
		lines[len(lines)-1] != `exec item "loud": [output truncated after 65536 bytes]` || out.Len() > maxCommandOutput+len(lines)*20 {
		t.Fatalf("%d lines, %d bytes: %q ... %q", len(lines), out.Len(), lines[:2], lines[len(lines)-1])
	}
}

// TestClientOutlastsWait checks the HTTP client's timeout exceeds a held
// poll.
func TestClientOutlastsWait(t *testing.T) {
	a := New(t.TempDir(), io.Discard)
	if got := a.client().Timeout; got != requestTimeout {
		t.Fatalf("default timeout %s", got)
	}
	a.Wait = 30
	a.Client = &http.Client{Timeout: 10 * time.Second}
	if got := a.client().Timeout; got <= 30*time.Second {
		t.Fatalf("timeout %s with wait 30", got)
	}
	a.Client = &http.Client{Timeout: 2 * time.Minute}
	if a.client() != a.Client {
		t.Fatal("a long enough client was replaced")
	}
}
