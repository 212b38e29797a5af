package smtp_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testproc"
)

// The test server is testdata/smtpd.py on aiosmtpd, run by the Python in
// the project's .venv (`make tools` installs it from requirements-dev.txt),
// or by $AIOSMTPD_PYTHON. A missing one fails the tests: it is never a skip.

const (
	testUser     = "certfleet-test"
	testPassword = "s3cret-Pa55word-that-must-not-leak"
)

func python(t *testing.T) string {
	t.Helper()
	p, err := testproc.VenvBinary("AIOSMTPD_PYTHON", "python")
	if err != nil {
		t.Fatalf("the test SMTP server (aiosmtpd) needs the project venv: %v", err)
	}
	return p
}

// tlsFiles is a self-signed certificate for localhost, 127.0.0.1 and ::1
// (or, to test name checks, for smtp.test only).
type tlsFiles struct {
	cert, key string
	pool      *x509.CertPool
}

func selfSigned(t *testing.T, otherName bool) tlsFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "certfleet smtp test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if otherName {
		tmpl.DNSNames, tmpl.IPAddresses = []string{"smtp.test"}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	if err := os.WriteFile(f.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	f.pool.AddCert(cert)
	return f
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is a running smtpd.py.
type server struct {
	Port int
	Dir  string
	TLS  tlsFiles
}

type serverOpts struct {
	mode string // starttls, tls or plain
	auth bool   // require AUTH PLAIN as testUser/testPassword
	// otherName: the certificate names only smtp.test, not this host.
	otherName bool
}

func startServer(t *testing.T, o serverOpts) *server {
	t.Helper()
	py := python(t)
	script, err := filepath.Abs(filepath.Join("testdata", "smtpd.py"))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{Dir: t.TempDir()}
	args := []string{script, "--dir", s.Dir, "--mode", o.mode}
	if o.mode != "plain" {
		s.TLS = selfSigned(t, o.otherName)
		args = append(args, "--cert", s.TLS.cert, "--key", s.TLS.key)
	}
	if o.auth {
		args = append(args, "--user", testUser, "--password", testPassword)
	}
	cmd := exec.Command(py, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v (run `make tools`)", py, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() && stderr.String() != "" {
			t.Logf("smtpd.py stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "listening ") {
				ready <- line
			}
		}
		close(ready)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			hint := ""
			if strings.Contains(stderr.String(), "No module named") {
				hint = "; run `make tools` to install aiosmtpd into .venv"
			}
			t.Fatalf("smtpd.py exited before listening%s:\n%s", hint, stderr.String())
		}
		_, portStr, err := net.SplitHostPort(strings.TrimPrefix(line, "listening "))
		if err != nil {
			t.Fatalf("smtpd.py said %q: %v", line, err)
		}
		if s.Port, err = strconv.Atoi(portStr); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("smtpd.py did not listen within 30s:\n%s", stderr.String())
	}
	return s
}

// stored lists the messages the server stored, oldest first, by base name.
func (s *server) stored(t *testing.T) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(s.Dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	for i, n := range names {
		names[i] = strings.TrimSuffix(n, ".eml")
	}
	return names
}

// Last returns the raw bytes of the newest stored message.
func (s *server) Last(t *testing.T) []byte {
	t.Helper()
	names := s.stored(t)
	if len(names) == 0 {
		t.Fatal("the SMTP server has stored no message")
	}
	raw, err := os.ReadFile(names[len(names)-1] + ".eml")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// envelope is what smtpd.py records beside each message.
type envelope struct {
	MailFrom string   `json:"mail_from"`
	RcptTos  []string `json:"rcpt_tos"`
	TLS      bool     `json:"tls"`
	Auth     *string  `json:"auth"`
}

func (s *server) LastEnvelope(t *testing.T) envelope {
	t.Helper()
	names := s.stored(t)
	if len(names) == 0 {
		t.Fatal("the SMTP server has stored no message")
	}
	b, err := os.ReadFile(names[len(names)-1] + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func (s *server) Count(t *testing.T) int { return len(s.stored(t)) }

// silentServer accepts TCP connections and never says anything.
func silentServer(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, form := range []string{testPassword, fmt.Sprintf("%q", testPassword), b64("\x00" + testUser + "\x00" + testPassword), b64(testPassword)} {
		if strings.Contains(err.Error(), form) {
			t.Errorf("error contains the password (as %q): %v", form, err)
		}
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), testPassword) {
			t.Errorf("a wrapped error contains the password: %v", e)
		}
	}
}
