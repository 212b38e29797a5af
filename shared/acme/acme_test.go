package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
)

const (
	pebbleToS       = "data:text/plain,Do%20what%20thou%20wilt"
	problemNS       = "urn:ietf:params:acme:error:"
	unauthorized    = problemNS + "unauthorized"
	eabRequired     = problemNS + "externalAccountRequired"
	malformed       = problemNS + "malformed"
	badPublicKey    = problemNS + "badPublicKey"
	testEmail       = "ops@certfleet.test"
	unreachableHost = "127.0.0.1"
)

func newClient(t *testing.T, rootsFile string) *acme.Client {
	t.Helper()
	c, err := acme.New(acme.Config{RootsPEMFile: rootsFile, Timeout: 20 * time.Second, UserAgent: "certfleet-test"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func hmacKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func asProblem(t *testing.T, err error) *acmeacct.Problem {
	t.Helper()
	var p *acmeacct.Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T) is not an *acmeacct.Problem", err, err)
	}
	t.Logf("problem: %d %v", p.Status, p)
	return p
}

func requireTransient(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("transient: %v", err)
	var p *acmeacct.Problem
	if errors.As(err, &p) {
		t.Fatalf("error %v is a *acmeacct.Problem, want a plain (transient) error", err)
	}
	if !strings.HasPrefix(err.Error(), "acme: ") {
		t.Errorf("error %q is not prefixed with %q", err, "acme: ")
	}
}

func TestDirectory(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{})
	c := newClient(t, p.RootsPEMFile)

	before := time.Now()
	meta, err := c.Directory(context.Background(), p.DirectoryURL)
	if err != nil {
		t.Fatalf("Directory: %v", err)
	}
	if meta.TermsOfService != pebbleToS {
		t.Errorf("TermsOfService = %q, want %q", meta.TermsOfService, pebbleToS)
	}
	if meta.Website != "" {
		t.Errorf("Website = %q, want none", meta.Website)
	}
	if want := []string{"pebble.letsencrypt.org"}; !reflect.DeepEqual(meta.CAAIdentities, want) {
		t.Errorf("CAAIdentities = %q, want %q", meta.CAAIdentities, want)
	}
	if meta.ExternalAccountRequired {
		t.Error("ExternalAccountRequired = true, want false")
	}
	if want := map[string]string{"default": "The default profile"}; !reflect.DeepEqual(meta.Profiles, want) {
		t.Errorf("Profiles = %q, want %q", meta.Profiles, want)
	}
	if meta.FetchedAt.Before(before.Add(-time.Second)) || meta.FetchedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("FetchedAt = %v, want about now", meta.FetchedAt)
	}
}

func TestDirectoryEABRequired(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{EAB: map[string]string{"kid-1": hmacKey(t)}})
	meta, err := newClient(t, p.RootsPEMFile).Directory(context.Background(), p.DirectoryURL)
	if err != nil {
		t.Fatalf("Directory: %v", err)
	}
	if !meta.ExternalAccountRequired {
		t.Error("ExternalAccountRequired = false, want true")
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{})
	c := newClient(t, p.RootsPEMFile)
	ctx := context.Background()
	key := p256(t)

	url1, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: testEmail, Key: key})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	base := strings.TrimSuffix(p.DirectoryURL, "/dir")
	if !strings.HasPrefix(url1, base+"/") || url1 == base+"/" {
		t.Errorf("account URL %q is not under %s", url1, base)
	}

	url2, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: testEmail, Key: key})
	if err != nil {
		t.Fatalf("Register again: %v", err)
	}
	if url2 != url1 {
		t.Errorf("same key registered again: URL %q, want the existing %q", url2, url1)
	}

	url3, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Key: p256(t)})
	if err != nil {
		t.Fatalf("Register another key without email: %v", err)
	}
	if url3 == url1 {
		t.Errorf("another key got the same account URL %q", url3)
	}
}

func TestRegisterInvalidContact(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{})
	_, err := newClient(t, p.RootsPEMFile).Register(context.Background(),
		acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: "not an email", Key: p256(t)})
	prob := asProblem(t, err)
	if prob.Type != problemNS+"invalidContact" || prob.Status != http.StatusBadRequest {
		t.Errorf("problem = %+v, want invalidContact 400", prob)
	}
}

func TestRegisterEAB(t *testing.T) {
	t.Parallel()
	hmac := hmacKey(t)
	p := pebbletest.Start(t, pebbletest.Options{EAB: map[string]string{"kid-1": hmac}})
	c := newClient(t, p.RootsPEMFile)
	ctx := context.Background()

	t.Run("right HMAC", func(t *testing.T) {
		key := p256(t)
		r := acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: testEmail, Key: key, EABKid: "kid-1", EABHMACKey: hmac}
		url1, err := c.Register(ctx, r)
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if url1 == "" {
			t.Fatal("no account URL")
		}
		url2, err := c.Register(ctx, r)
		if err != nil {
			t.Fatalf("Register again: %v", err)
		}
		if url2 != url1 {
			t.Errorf("same key registered again: URL %q, want %q", url2, url1)
		}
	})

	t.Run("padded base64url HMAC", func(t *testing.T) {
		raw, _ := base64.RawURLEncoding.DecodeString(hmac)
		padded := base64.URLEncoding.EncodeToString(raw)
		_, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Key: p256(t), EABKid: "kid-1", EABHMACKey: padded})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
	})

	t.Run("wrong HMAC", func(t *testing.T) {
		_, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: testEmail, Key: p256(t), EABKid: "kid-1", EABHMACKey: hmacKey(t)})
		prob := asProblem(t, err)
		if prob.Type != unauthorized || prob.Status != http.StatusForbidden {
			t.Errorf("problem = %+v, want unauthorized 403", prob)
		}
		if !strings.Contains(prob.Detail, "external account binding") {
			t.Errorf("Detail %q does not name the external account binding", prob.Detail)
		}
	})

	t.Run("unknown kid", func(t *testing.T) {
		_, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Key: p256(t), EABKid: "kid-9", EABHMACKey: hmac})
		prob := asProblem(t, err)
		if prob.Type != unauthorized || !strings.Contains(prob.Detail, "kid") {
			t.Errorf("problem = %+v, want unauthorized naming the kid", prob)
		}
	})

	t.Run("without EAB", func(t *testing.T) {
		_, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: p.DirectoryURL, Email: testEmail, Key: p256(t)})
		prob := asProblem(t, err)
		if prob.Type != eabRequired || prob.Status != http.StatusForbidden {
			t.Errorf("problem = %+v, want externalAccountRequired 403", prob)
		}
		if !strings.Contains(prob.Detail, "externalAccountBinding") {
			t.Errorf("Detail %q does not name externalAccountBinding", prob.Detail)
		}
	})
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", unreachableHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	dirURL := fmt.Sprintf("https://%s/dir", l.Addr())
	l.Close() // nothing listens there now

	c := newClient(t, "")
	_, err = c.Directory(context.Background(), dirURL)
	requireTransient(t, err)
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Directory error %q does not say the connection was refused", err)
	}
	_, err = c.Register(context.Background(), acmeacct.Registration{DirectoryURL: dirURL, Key: p256(t)})
	requireTransient(t, err)
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Register error %q does not say the connection was refused", err)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	p := pebbletest.Start(t, pebbletest.Options{})
	c := newClient(t, "") // system roots only: Pebble's minica is not among them

	_, err := c.Directory(context.Background(), p.DirectoryURL)
	requireTransient(t, err)
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Directory error %q does not mention the certificate", err)
	}
	_, err = c.Register(context.Background(), acmeacct.Registration{DirectoryURL: p.DirectoryURL, Key: p256(t)})
	requireTransient(t, err)
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Register error %q does not mention the certificate", err)
	}
}

func TestRefusedBeforeTheCA(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	ctx := context.Background()
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	const dir = "https://127.0.0.1:1/dir" // never contacted
	for name, tc := range map[string]struct {
		r        acmeacct.Registration
		wantType string
	}{
		"http URL":         {acmeacct.Registration{DirectoryURL: "http://127.0.0.1:1/dir", Key: p256(t)}, malformed},
		"no URL":           {acmeacct.Registration{Key: p256(t)}, malformed},
		"no key":           {acmeacct.Registration{DirectoryURL: dir}, malformed},
		"ed25519 key":      {acmeacct.Registration{DirectoryURL: dir, Key: edKey}, badPublicKey},
		"P-224 key":        {acmeacct.Registration{DirectoryURL: dir, Key: p224}, badPublicKey},
		"kid without HMAC": {acmeacct.Registration{DirectoryURL: dir, Key: p256(t), EABKid: "kid-1"}, malformed},
		"HMAC not base64":  {acmeacct.Registration{DirectoryURL: dir, Key: p256(t), EABKid: "kid-1", EABHMACKey: "not base64!"}, malformed},
	} {
		_, err := c.Register(ctx, tc.r)
		prob := asProblem(t, err)
		if prob.Type != tc.wantType || prob.Status != 0 {
			t.Errorf("%s: problem = %+v, want %s with status 0", name, prob, tc.wantType)
		}
	}
	_, err := c.Directory(ctx, "http://127.0.0.1:1/dir")
	if prob := asProblem(t, err); prob.Type != malformed {
		t.Errorf("Directory over http: problem = %+v, want malformed", prob)
	}
}

func TestNewRoots(t *testing.T) {
	t.Parallel()
	if _, err := acme.New(acme.Config{RootsPEMFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil || !strings.HasPrefix(err.Error(), "acme: ") {
		t.Errorf("missing roots file: err = %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("no PEM here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.New(acme.Config{RootsPEMFile: empty}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("roots file without certificates: err = %v", err)
	}
}

// fakeCA is a minimal ACME server whose newAccount answers what the test
// says, to check how answers Pebble never gives are classified.
type fakeCA struct {
	srv       *httptest.Server
	rootsFile string
	status    int
	body      string
	header    map[string]string
	hang      chan struct{}
	newAcct   atomic.Int32
}

func startFakeCA(t *testing.T, status int, body string) *fakeCA {
	t.Helper()
	f := &fakeCA{status: status, body: body, header: map[string]string{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.rootsFile = filepath.Join(t.TempDir(), "roots.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(f.rootsFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeCA) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
	switch r.URL.Path {
	case "/dir":
		if f.hang != nil {
			// Held until the test ends, whatever happens to the request:
			// a handler that returned early would answer an empty 200
			// before the client's deadline (seen once in CI).
			<-f.hang
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"newNonce":%q,"newAccount":%q,"newOrder":%q}`,
			f.srv.URL+"/nonce", f.srv.URL+"/new-acct", f.srv.URL+"/new-order")
	case "/nonce":
		w.WriteHeader(http.StatusOK)
	case "/new-acct":
		f.newAcct.Add(1)
		for k, v := range f.header {
			w.Header().Set(k, v)
		}
		if strings.HasPrefix(f.body, "{") {
			w.Header().Set("Content-Type", "application/problem+json")
		}
		w.WriteHeader(f.status)
		_, _ = w.Write([]byte(f.body))
	default:
		http.NotFound(w, r)
	}
}

func TestRegisterClassifiesAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		header    map[string]string
		permanent bool
		wantType  string
	}{
		{"4xx problem", 400, `{"type":"urn:ietf:params:acme:error:malformed","detail":"bad request","status":400}`, nil, true, malformed},
		{"4xx problem without status", 403, `{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no"}`, nil, true, unauthorized},
		{"5xx problem", 503, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for maintenance","status":503}`, nil, false, ""},
		{"5xx without problem", 502, `<html>bad gateway</html>`, nil, false, ""},
		{"rate limited", 429, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new accounts","status":429}`, map[string]string{"Retry-After": "120"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startFakeCA(t, tc.status, tc.body)
			for k, v := range tc.header {
				f.header[k] = v
			}
			c := newClient(t, f.rootsFile)
			_, err := c.Register(context.Background(), acmeacct.Registration{DirectoryURL: f.srv.URL + "/dir", Key: p256(t)})
			if tc.permanent {
				prob := asProblem(t, err)
				if prob.Type != tc.wantType || prob.Status != tc.status {
					t.Errorf("problem = %+v, want %s %d", prob, tc.wantType, tc.status)
				}
				return
			}
			requireTransient(t, err)
			if tc.header["Retry-After"] != "" && !strings.Contains(err.Error(), "retry after 120") {
				t.Errorf("error %q does not carry Retry-After", err)
			}
		})
	}
}

func TestRegisterHonoursContext(t *testing.T) {
	t.Parallel()
	f := startFakeCA(t, 201, "{}")
	f.hang = make(chan struct{})
	t.Cleanup(func() { close(f.hang) })
	c := newClient(t, f.rootsFile)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Register(ctx, acmeacct.Registration{DirectoryURL: f.srv.URL + "/dir", Key: p256(t)})
	requireTransient(t, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v is not context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Register took %v after a 200ms deadline", d)
	}

	_, err = c.Directory(ctx, f.srv.URL+"/dir")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Directory after the deadline: %v, want context.DeadlineExceeded", err)
	}

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = c.Register(canceled, acmeacct.Registration{DirectoryURL: f.srv.URL + "/dir", Key: p256(t)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Register with a canceled context: %v, want context.Canceled", err)
	}
}

func TestConfigTimeout(t *testing.T) {
	t.Parallel()
	f := startFakeCA(t, 201, "{}")
	f.hang = make(chan struct{})
	t.Cleanup(func() { close(f.hang) })
	c, err := acme.New(acme.Config{RootsPEMFile: f.rootsFile, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Directory(context.Background(), f.srv.URL+"/dir")
	requireTransient(t, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v is not context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Directory took %v with a 200ms timeout", d)
	}
}
