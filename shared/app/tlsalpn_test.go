package app_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/internal/testproc"
	"github.com/certfleet/certfleet/shared/tlsalpn"
)

// tlsalpnApp opens the local shape with CERTFLEET_TLSALPN_ADDR set to addr.
func tlsalpnApp(t *testing.T, addr string) *app.App {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": dir, "CERTFLEET_SHUTDOWN_TIMEOUT": "10s",
			"CERTFLEET_LOG_LEVEL": "warn", "CERTFLEET_TLSALPN_ADDR": addr}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSALPNAddr != addr {
		t.Fatalf("config TLSALPNAddr = %q, want %q", cfg.TLSALPNAddr, addr)
	}
	a, err := app.Local(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestServeAnswersTLSALPN runs `certfleet serve` with the TLS-ALPN-01
// responder: its port is open while the server runs, a CA-style handshake
// for a name with no challenge pending is refused by the responder itself
// (a TLS alert, not a dead port), and the port closes with the server.
func TestServeAnswersTLSALPN(t *testing.T) {
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	alpnAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	a := tlsalpnApp(t, alpnAddr)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()

	// The port opens (Serve listens before it starts anything else).
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", alpnAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the TLS-ALPN-01 port %s did not open: %v", alpnAddr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		ServerName: "nothing-pending.certfleet.test", NextProtos: []string{tlsalpn.Protocol},
		InsecureSkipVerify: true, // a challenge certificate is self-signed by design
	}}
	hsCtx, hsCancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dialer.DialContext(hsCtx, "tcp", alpnAddr)
	hsCancel()
	if err == nil {
		st := c.(*tls.Conn).ConnectionState()
		c.Close()
		t.Fatalf("handshake for a name without a challenge succeeded: certificate for %q", st.PeerCertificates[0].DNSNames)
	}
	if !strings.Contains(err.Error(), "remote error: tls:") {
		t.Fatalf("handshake error %q is not the responder's TLS alert", err)
	}
	t.Logf("unknown name: %v", err)

	// The HTTP server runs alongside.
	resp, err := http.Get("http://" + ln.Addr().String() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", alpnAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the TLS-ALPN-01 port still accepts connections after Serve returned")
	}
}

// TestServeTLSALPNAddrBusy: a TLS-ALPN-01 address that cannot be listened
// on fails Serve at once, naming the variable, and releases the HTTP
// listener.
func TestServeTLSALPNAddrBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	a := tlsalpnApp(t, busy.Addr().String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background(), ln) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "CERTFLEET_TLSALPN_ADDR") {
			t.Fatalf("Serve with a busy TLS-ALPN-01 address: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve with a busy TLS-ALPN-01 address did not return")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the HTTP listener is still open after Serve failed")
	}
}
