package smtp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/mail/mailtest"
	"github.com/certfleet/certfleet/shared/mail/smtp"
)

const testFrom = "certfleet <noreply@certfleet.example>"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func newSender(t *testing.T, cfg smtp.Config) *smtp.Sender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = testFrom
	}
	s, err := smtp.New(cfg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg, err)
	}
	return s
}

var hello = mail.Message{
	To:      "Alice Example <alice@example.com>",
	Subject: "Activate your account",
	Text:    "Open https://certfleet.example/activate?t=1 to activate.\n",
	Link:    "https://certfleet.example/activate?t=1",
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		mode smtp.Mode
		opts serverOpts
		host string
		user bool
	}{
		{"STARTTLS with AUTH", smtp.STARTTLS, serverOpts{mode: "starttls", auth: true}, "localhost", true},
		{"implicit TLS with AUTH", smtp.ImplicitTLS, serverOpts{mode: "tls", auth: true}, "127.0.0.1", true},
		{"plain loopback without AUTH", smtp.Plain, serverOpts{mode: "plain"}, "127.0.0.1", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, c.opts)
			cfg := smtp.Config{Host: c.host, Port: srv.Port, TLS: c.mode, RootCAs: srv.TLS.pool}
			if c.user {
				cfg.Username, cfg.Password = testUser, testPassword
			}
			s := newSender(t, cfg)
			mailtest.Run(t, s, srv.Last)

			if err := s.Send(context.Background(), hello); err != nil {
				t.Fatal(err)
			}
			env := srv.LastEnvelope(t)
			if env.MailFrom != "noreply@certfleet.example" || len(env.RcptTos) != 1 || env.RcptTos[0] != "alice@example.com" {
				t.Errorf("envelope from %q to %q; want noreply@certfleet.example to [alice@example.com]", env.MailFrom, env.RcptTos)
			}
			if env.TLS != (c.mode != smtp.Plain) {
				t.Errorf("server saw TLS=%v in mode %s", env.TLS, c.mode)
			}
			if c.user && (env.Auth == nil || *env.Auth != testUser) {
				t.Errorf("server saw auth %v; want %q", env.Auth, testUser)
			}
			if !c.user && env.Auth != nil {
				t.Errorf("server saw auth %q; want none", *env.Auth)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{mode: "starttls", auth: true})
	for _, c := range []struct{ user, password string }{
		{testUser, testPassword + "x"},
		{testUser + "x", testPassword},
	} {
		s := newSender(t, smtp.Config{Host: "localhost", Port: srv.Port, Username: c.user, Password: c.password, RootCAs: srv.TLS.pool})
		err := s.Send(context.Background(), hello)
		if err == nil {
			t.Fatalf("user %q with a wrong password: Send succeeded", c.user)
		}
		t.Logf("wrong credentials: %v", err)
		if !strings.HasPrefix(err.Error(), "smtp: ") || !strings.Contains(err.Error(), "AUTH") {
			t.Errorf("error %q does not say it failed in AUTH", err)
		}
		if errors.Is(err, mail.ErrRejected) || errors.Is(err, mail.ErrInvalid) {
			t.Errorf("an authentication failure is not a rejected or invalid message: %v", err)
		}
		for _, secret := range []string{c.password, b64(c.password), b64("\x00" + c.user + "\x00" + c.password)} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error contains the password: %v", err)
			}
		}
	}
	if n := srv.Count(t); n != 0 {
		t.Errorf("the server stored %d messages", n)
	}
}

func TestPlainLoopbackWithAuth(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{mode: "plain", auth: true})
	s := newSender(t, smtp.Config{Host: "127.0.0.1", Port: srv.Port, TLS: smtp.Plain, Username: testUser, Password: testPassword})
	if err := s.Send(context.Background(), hello); err != nil {
		t.Fatal(err)
	}
	if env := srv.LastEnvelope(t); env.TLS || env.Auth == nil || *env.Auth != testUser {
		t.Errorf("envelope %+v; want plain text, authenticated as %q", env, testUser)
	}
}

func TestSTARTTLSIsRequired(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{mode: "plain"})
	s := newSender(t, smtp.Config{Host: "127.0.0.1", Port: srv.Port, TLS: smtp.STARTTLS})
	err := s.Send(context.Background(), hello)
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send to a server without STARTTLS: %v; want an error about STARTTLS", err)
	}
	if n := srv.Count(t); n != 0 {
		t.Errorf("the server stored %d messages", n)
	}
}

func TestServerCertificateIsVerified(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		mode     string
		tlsMode  smtp.Mode
		trust    bool // RootCAs holds the server's certificate
		otherNam bool // the certificate names smtp.test, not localhost
	}{
		{"starttls", smtp.STARTTLS, false, false},
		{"tls", smtp.ImplicitTLS, false, false},
		{"starttls", smtp.STARTTLS, true, true},
		{"tls", smtp.ImplicitTLS, true, true},
	} {
		srv := startServer(t, serverOpts{mode: c.mode, auth: true, otherName: c.otherNam})
		cfg := smtp.Config{Host: "localhost", Port: srv.Port, TLS: c.tlsMode, Username: testUser, Password: testPassword}
		if c.trust {
			cfg.RootCAs = srv.TLS.pool
		}
		err := newSender(t, cfg).Send(context.Background(), hello)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s, trusted %v, other name %v: %v; want a certificate error", c.tlsMode, c.trust, c.otherNam, err)
		}
		t.Logf("%s, trusted %v, other name %v: %v", c.tlsMode, c.trust, c.otherNam, err)
		assertNoSecret(t, err)
		if n := srv.Count(t); n != 0 {
			t.Errorf("%s: the server stored %d messages", c.tlsMode, n)
		}
	}
}

func TestRejectedRecipient(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{mode: "starttls", auth: true})
	s := newSender(t, smtp.Config{Host: "localhost", Port: srv.Port, Username: testUser, Password: testPassword, RootCAs: srv.TLS.pool})
	m := hello
	m.To = "reject-me@example.com"
	err := s.Send(context.Background(), m)
	if !errors.Is(err, mail.ErrRejected) {
		t.Fatalf("Send to a refused recipient: %v; want mail.ErrRejected", err)
	}
	if !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "RCPT TO") {
		t.Errorf("error %q does not carry the server's answer and step", err)
	}
	if n := srv.Count(t); n != 0 {
		t.Errorf("the server stored %d messages", n)
	}
}

func TestNewRefuses(t *testing.T) {
	cases := map[string]smtp.Config{
		"plain with credentials to a remote name": {Host: "smtp.example.com", Port: 25, TLS: smtp.Plain, Username: "u", Password: testPassword, From: testFrom},
		"plain with credentials to a remote IP":   {Host: "192.0.2.10", Port: 25, TLS: smtp.Plain, Username: "u", Password: testPassword, From: testFrom},
		"plain with credentials to a look-alike":  {Host: "localhost.example.com", TLS: smtp.Plain, Username: "u", Password: testPassword, From: testFrom},
		"plain without credentials to a remote":   {Host: "smtp.example.com", TLS: smtp.Plain, From: testFrom},
		"no host":                                 {From: testFrom},
		"host with a port":                        {Host: "smtp.example.com:587", From: testFrom},
		"negative port":                           {Host: "smtp.example.com", Port: -1, From: testFrom},
		"port too big":                            {Host: "smtp.example.com", Port: 65536, From: testFrom},
		"unknown mode":                            {Host: "smtp.example.com", TLS: smtp.Mode(9), From: testFrom},
		"no From":                                 {Host: "smtp.example.com"},
		"From with CRLF":                          {Host: "smtp.example.com", From: "a@example.com\r\nBcc: b@example.com"},
		"two From":                                {Host: "smtp.example.com", From: "a@example.com, b@example.com"},
		"password without user":                   {Host: "smtp.example.com", Password: testPassword, From: testFrom},
		"negative timeout":                        {Host: "smtp.example.com", From: testFrom, Timeout: -time.Second},
	}
	for name, cfg := range cases {
		s, err := smtp.New(cfg)
		if err == nil {
			t.Errorf("%s: New(%v) succeeded", name, cfg)
			continue
		}
		if s != nil {
			t.Errorf("%s: New returned a Sender with its error", name)
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Errorf("%s: the error contains the password: %v", name, err)
		}
		if strings.HasPrefix(name, "plain") && !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: error %q does not explain the loopback rule", name, err)
		}
	}
	for _, cfg := range []smtp.Config{
		{Host: "localhost", TLS: smtp.Plain, Username: "u", Password: testPassword, From: testFrom},
		{Host: "127.0.0.1", TLS: smtp.Plain, From: testFrom},
		{Host: "127.1.2.3", TLS: smtp.Plain, From: testFrom},
		{Host: "::1", TLS: smtp.Plain, Username: "u", Password: testPassword, From: testFrom},
		{Host: "smtp.example.com", Username: "u", Password: testPassword, From: testFrom},
		{Host: "smtp.example.com", TLS: smtp.ImplicitTLS, From: "noreply@example.com"},
		{Host: "2001:db8::1", Port: 2525, From: testFrom},
	} {
		if _, err := smtp.New(cfg); err != nil {
			t.Errorf("New(%v): %v", cfg, err)
		}
	}
}

func TestConfigDoesNotPrintPassword(t *testing.T) {
	cfg := smtp.Config{Host: "smtp.example.com", Port: 587, Username: "u", Password: testPassword, From: testFrom}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "smtp", cfg)
	for _, out := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg), fmt.Sprintf("%v", &cfg), logged.String(),
	} {
		if strings.Contains(out, testPassword) {
			t.Errorf("the password is printed: %s", out)
		}
	}
	if !strings.Contains(logged.String(), "smtp.example.com") {
		t.Errorf("the log lost the host: %s", logged.String())
	}
}

// TestDeadlines points the Sender at a server that accepts the connection
// and never answers: Send must give up when the context or the timeout
// says, whatever the mode.
func TestDeadlines(t *testing.T) {
	t.Parallel()
	port := silentServer(t)
	const wait = 300 * time.Millisecond
	const slack = 2 * time.Second
	for _, mode := range []smtp.Mode{smtp.STARTTLS, smtp.ImplicitTLS, smtp.Plain} {
		s := newSender(t, smtp.Config{Host: "127.0.0.1", Port: port, TLS: mode})

		ctx, cancel := context.WithTimeout(context.Background(), wait)
		start := time.Now()
		err := s.Send(ctx, hello)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s, context deadline: %v; want context.DeadlineExceeded", mode, err)
		}
		if took > wait+slack {
			t.Errorf("%s, context deadline of %s: Send took %s", mode, wait, took)
		}
		t.Logf("%s, context deadline %s: returned after %s: %v", mode, wait, took.Round(time.Millisecond), err)

		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(wait, cancel)
		start = time.Now()
		err = s.Send(ctx, hello)
		took = time.Since(start)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s, canceled: %v; want context.Canceled", mode, err)
		}
		if took > wait+slack {
			t.Errorf("%s, canceled after %s: Send took %s", mode, wait, took)
		}

		s = newSender(t, smtp.Config{Host: "127.0.0.1", Port: port, TLS: mode, Timeout: wait})
		start = time.Now()
		err = s.Send(context.Background(), hello)
		took = time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s, Config.Timeout: %v; want context.DeadlineExceeded", mode, err)
		}
		if took > wait+slack {
			t.Errorf("%s, Config.Timeout of %s: Send took %s", mode, wait, took)
		}
	}
}

func TestInvalidMessageDoesNotConnect(t *testing.T) {
	// Nothing listens on this port: an invalid message must fail before
	// any connection is tried.
	s := newSender(t, smtp.Config{Host: "127.0.0.1", Port: 1, TLS: smtp.Plain})
	err := s.Send(context.Background(), mail.Message{To: "a@example.com\nBcc: b@example.com"})
	if !errors.Is(err, mail.ErrInvalid) {
		t.Fatalf("got %v; want mail.ErrInvalid", err)
	}
}

// TestEchoedCredentialsAreScrubbed: a server that quotes the AUTH line
// back in its refusal (some do) must not get the password into the error.
// smtpd.py does not echo, so a few lines of raw SMTP stand in for one.
func TestEchoedCredentialsAreScrubbed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := textproto.NewConn(c)
		tc.PrintfLine("220 echo.test ESMTP")
		for {
			line, err := tc.ReadLine()
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, "EHLO"):
				tc.PrintfLine("250-echo.test\r\n250 AUTH PLAIN")
			case strings.HasPrefix(line, "AUTH"):
				tc.PrintfLine("535 5.7.8 bad credentials in %s (password %s)", line, testPassword)
			default:
				tc.PrintfLine("221 bye")
				return
			}
		}
	}()
	s := newSender(t, smtp.Config{Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, TLS: smtp.Plain, Username: testUser, Password: testPassword})
	err = s.Send(context.Background(), hello)
	if err == nil {
		t.Fatal("Send succeeded")
	}
	t.Logf("echoed refusal: %v", err)
	if !strings.Contains(err.Error(), "[redacted]") || !strings.Contains(err.Error(), "535") {
		t.Errorf("error %q: want the server's answer with the secrets redacted", err)
	}
	assertNoSecret(t, err)
}
