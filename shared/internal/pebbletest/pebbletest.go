// Package pebbletest starts Pebble, Let's Encrypt's ACME test server, for
// tests that talk ACME through the real client code.
//
// The binary is the module's pinned Go tool (`tool` in go.mod,
// github.com/letsencrypt/pebble/v2): `go tool -n pebble` builds it once into
// the Go build cache and prints its path, so the first start on a fresh
// machine compiles Pebble (some seconds) and every later one reuses the
// cached executable. $PEBBLE_BIN overrides the binary. A binary that cannot
// be built or started is a test failure, never a skip.
//
// Pebble serves its API and management interface over TLS with the
// localhost certificate shipped in its module (test/certs/localhost),
// issued by test/certs/pebble.minica.pem: Pebble.RootCAs and
// Pebble.RootsPEMFile are that minica root. The certificates Pebble issues
// chain to a different root, generated at each start: IssuerRootsPEM reads
// it from the management interface.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testproc"
)

const pebbleModule = "github.com/letsencrypt/pebble/v2"

// Options shape one Pebble instance; the zero value is a plain CA without
// external account binding that validates challenges for real.
type Options struct {
	// EAB maps key ids to base64url (unpadded) HMAC keys. A non-empty map
	// makes Pebble require external account binding on newAccount.
	EAB map[string]string
	// HTTPPort and TLSPort are the ports Pebble's VA connects to for
	// HTTP-01 and TLS-ALPN-01; zero means Pebble's defaults, 5002 and 5001.
	HTTPPort, TLSPort int
	// DNSServer ("host:port") is the resolver the VA uses, e.g.
	// pebble-challtestsrv's DNS server; empty means the system resolver.
	DNSServer string
	// AlwaysValid sets PEBBLE_VA_ALWAYS_VALID: every challenge passes
	// without a request.
	AlwaysValid bool
}

// Pebble is a running Pebble.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:<port>/dir.
	DirectoryURL string
	// ManagementURL is the management interface, https://127.0.0.1:<port>.
	ManagementURL string
	// RootCAs trusts Pebble's API and management TLS certificate.
	RootCAs *x509.CertPool
	// RootsPEMFile is the PEM file behind RootCAs (for CERTFLEET_CA_ROOTS).
	RootsPEMFile string

	cmd     *exec.Cmd
	exited  <-chan struct{}
	logPath string
	client  *http.Client
}

// Start launches Pebble on free loopback ports, waits until its directory
// and management interface answer, and stops it when the test ends. Each
// call is its own Pebble with its own state and issuing CA; parallel tests
// may call it concurrently. Set PEBBLE_LOG=1 to see Pebble's log; a failed
// test shows its tail anyway.
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	modDir, err := moduleDir()
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	dir := t.TempDir()
	rootsFile := filepath.Join(modDir, "test", "certs", "pebble.minica.pem")
	rootPEM, err := os.ReadFile(rootsFile)
	if err != nil {
		t.Fatalf("pebbletest: read Pebble's minica root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebbletest: %s holds no certificate", rootsFile)
	}

	// A free port can be taken between probing and Pebble's listen; Pebble
	// then exits at once, and another pair of ports is tried.
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		p, err := start(bin, modDir, dir, attempt, opts, pool)
		if err == nil {
			p.RootsPEMFile = rootsFile
			t.Cleanup(func() {
				p.stop()
				if t.Failed() {
					t.Logf("pebbletest: Pebble log (%s):\n%s", p.DirectoryURL, tail(p.logPath, 60))
				}
			})
			return p
		}
		lastErr = err
	}
	t.Fatalf("pebbletest: %v", lastErr)
	return nil
}

func start(bin, modDir, dir string, attempt int, opts Options, pool *x509.CertPool) (*Pebble, error) {
	apiPort, err := testproc.FreePort()
	if err != nil {
		return nil, err
	}
	mgmtPort, err := testproc.FreePort()
	if err != nil {
		return nil, err
	}
	httpPort, tlsPort := opts.HTTPPort, opts.TLSPort
	if httpPort == 0 {
		httpPort = 5002
	}
	if tlsPort == 0 {
		tlsPort = 5001
	}
	type pebbleConfig struct {
		ListenAddress                  string            `json:"listenAddress"`
		ManagementListenAddress        string            `json:"managementListenAddress"`
		Certificate                    string            `json:"certificate"`
		PrivateKey                     string            `json:"privateKey"`
		HTTPPort                       int               `json:"httpPort"`
		TLSPort                        int               `json:"tlsPort"`
		OCSPResponderURL               string            `json:"ocspResponderURL"`
		ExternalAccountBindingRequired bool              `json:"externalAccountBindingRequired"`
		ExternalAccountMACKeys         map[string]string `json:"externalAccountMACKeys,omitempty"`
		// ECDSA root and intermediate keys: generated at each start, and
		// much faster than RSA.
		KeyAlgorithm string `json:"keyAlgorithm"`
	}
	cfg := map[string]pebbleConfig{"pebble": {
		ListenAddress:                  "127.0.0.1:" + strconv.Itoa(apiPort),
		ManagementListenAddress:        "127.0.0.1:" + strconv.Itoa(mgmtPort),
		Certificate:                    filepath.Join(modDir, "test", "certs", "localhost", "cert.pem"),
		PrivateKey:                     filepath.Join(modDir, "test", "certs", "localhost", "key.pem"),
		HTTPPort:                       httpPort,
		TLSPort:                        tlsPort,
		ExternalAccountBindingRequired: len(opts.EAB) > 0,
		ExternalAccountMACKeys:         opts.EAB,
		KeyAlgorithm:                   "ecdsa",
	}}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, fmt.Sprintf("pebble-config-%d.json", attempt))
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("pebble-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	args := []string{"-config", cfgPath}
	if opts.DNSServer != "" {
		args = append(args, "-dnsserver", opts.DNSServer)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(environWithout("PEBBLE_"),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_VA_ALWAYS_VALID="+strconv.FormatBool(opts.AlwaysValid),
	)
	exited, err := startLogged(cmd, logFile)
	if err != nil {
		return nil, err
	}

	p := &Pebble{
		DirectoryURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", apiPort),
		ManagementURL: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		RootCAs:       pool,
		cmd:           cmd,
		exited:        exited,
		logPath:       logPath,
		client: &http.Client{
			Timeout:   5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.answers(p.DirectoryURL) && p.answers(p.ManagementURL+"/roots/0") {
			// Still running: a Pebble that lost its port to another
			// listener exits at once.
			select {
			case <-exited:
			case <-time.After(20 * time.Millisecond):
				return p, nil
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("pebble exited during start (%s):\n%s", cmd.ProcessState, tail(logPath, 30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("pebble did not answer on %s within 30s:\n%s", p.DirectoryURL, tail(logPath, 30))
		}
	}
}

func (p *Pebble) answers(url string) bool {
	resp, err := p.client.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (p *Pebble) stop() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	p.client.CloseIdleConnections()
}

// HTTPClient returns a client that trusts Pebble's API certificate.
func (p *Pebble) HTTPClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: p.client.Transport}
}

// IssuerRootsPEM returns the PEM of the root that the certificates this
// Pebble issues chain to (management API /roots/0). Pebble generates it at
// start, so it differs between instances.
func (p *Pebble) IssuerRootsPEM(t testing.TB) []byte {
	t.Helper()
	return p.managementGet(t, "/roots/0")
}

// IssuerIntermediatePEM returns the PEM of the intermediate that signs this
// Pebble's certificates (management API /intermediates/0).
func (p *Pebble) IssuerIntermediatePEM(t testing.TB) []byte {
	t.Helper()
	return p.managementGet(t, "/intermediates/0")
}

// IssuerRoots is IssuerRootsPEM as a pool, to verify issued certificates.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.IssuerRootsPEM(t)) {
		t.Fatalf("pebbletest: %s/roots/0 returned no certificate", p.ManagementURL)
	}
	return pool
}

func (p *Pebble) managementGet(t testing.TB, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.ManagementURL+path, nil)
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("pebbletest: GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("pebbletest: GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pebbletest: GET %s: %s", path, resp.Status)
	}
	return body
}

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{}
)

// Binary returns the path of the pebble executable: $PEBBLE_BIN, or the
// go.mod tool built (once, then from the build cache) by `go tool -n`.
func Binary() (string, error) {
	if p := os.Getenv("PEBBLE_BIN"); p != "" {
		return p, nil
	}
	return tool("pebble")
}

// tool resolves a Go tool of the module to its cached executable, building
// it if needed. Results are remembered for the life of the test binary.
func tool(name string) (string, error) {
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[name]; ok {
		return p, nil
	}
	out, err := goCommand("tool", "-n", name)
	if err != nil {
		return "", fmt.Errorf("build %s (a tool in go.mod: `go get -tool %s/cmd/%s@v2.10.1`): %w", name, pebbleModule, name, err)
	}
	p := strings.TrimSpace(string(out))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("`go tool -n %s` printed %q, which is not a file: %v", name, p, err)
	}
	toolPaths[name] = p
	return p, nil
}

var (
	modDirOnce sync.Once
	modDirPath string
	modDirErr  error
)

// moduleDir is Pebble's module directory (its test certificates):
// `go mod download -json` prints it, downloading the module if needed.
func moduleDir() (string, error) {
	modDirOnce.Do(func() {
		out, err := goCommand("mod", "download", "-json", pebbleModule)
		if err != nil {
			modDirErr = err
			return
		}
		var info struct{ Dir string }
		if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
			modDirErr = fmt.Errorf("go mod download %s: no module directory in %s", pebbleModule, out)
			return
		}
		modDirPath = info.Dir
	})
	return modDirPath, modDirErr
}

// goCommand runs the go command in the module root and returns its stdout.
func goCommand(args ...string) ([]byte, error) {
	root, err := testproc.ModuleRoot()
	if err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command is not on PATH: %w", err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("`go %s` in %s: %v\n%s", strings.Join(args, " "), root, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// tail returns the last n lines of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startLogged starts cmd in its own process group, killed with the test
// process, its output to logFile (and stderr with PEBBLE_LOG set); the
// channel closes when it exits.
func startLogged(cmd *exec.Cmd, logFile *os.File) (<-chan struct{}, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Getenv("PEBBLE_LOG") != "" {
		cmd.Stdout = io.MultiWriter(logFile, os.Stderr)
		cmd.Stderr = cmd.Stdout
	} else {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return exited, nil
}
