// Package smtp is the mail adapter for SMTP submission servers: each Send
// opens one connection, secures it (STARTTLS or implicit TLS; plain only to
// a server on the same machine), authenticates with AUTH PLAIN when a user
// name is configured, and submits the message that mail.Render builds.
package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/mail"
)

// Mode is how the connection to the server is secured.
type Mode int

const (
	// STARTTLS connects in plain text and upgrades with STARTTLS before
	// anything else; a server that does not offer it is an error. The
	// default (the zero Mode); port 587 unless set.
	STARTTLS Mode = iota
	// ImplicitTLS speaks TLS from the first byte ("SMTPS"); port 465
	// unless set.
	ImplicitTLS
	// Plain never encrypts. Allowed only to a loopback host (a local test
	// server or a relay on the same machine); port 25 unless set.
	Plain
)

func (m Mode) String() string {
	switch m {
	case STARTTLS:
		return "starttls"
	case ImplicitTLS:
		return "tls"
	case Plain:
		return "plain"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// DefaultTimeout bounds one Send whose context has no earlier deadline.
const DefaultTimeout = 30 * time.Second

// Config describes the server and the sender. String, GoString and
// LogValue leave the password out.
type Config struct {
	Host string
	// Port 0 means the Mode's usual port: 587, 465 or 25.
	Port int
	// Username, when set, is sent with Password in AUTH PLAIN.
	Username, Password string
	// From is the sender address (header and envelope), as net/mail
	// parses it: "certfleet <noreply@example.com>".
	From string
	TLS  Mode
	// RootCAs verifies the server's certificate; nil means the system
	// pool. Tests set it to trust their own server.
	RootCAs *x509.CertPool
	// Timeout bounds one Send when the context has no earlier deadline;
	// 0 means DefaultTimeout.
	Timeout time.Duration
}

func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = " password=[redacted]"
	}
	return fmt.Sprintf("smtp.Config{%s:%d %s user=%q%s from=%q}", c.Host, c.Port, c.TLS, c.Username, pw, c.From)
}

// GoString keeps %#v from printing the password.
func (c Config) GoString() string { return c.String() }

// LogValue keeps slog from logging the password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("host", c.Host), slog.Int("port", c.Port), slog.String("tls", c.TLS.String()),
		slog.String("username", c.Username), slog.Bool("password_set", c.Password != ""),
		slog.String("from", c.From))
}

// Sender sends mail through one SMTP server. Safe for concurrent use: each
// Send has its own connection.
type Sender struct {
	cfg     Config
	addr    string // host:port
	from    *netmail.Address
	tlsConf *tls.Config
	timeout time.Duration
	secrets []string // what must never appear in an error
}

var _ mail.Sender = (*Sender)(nil)

// New checks cfg and returns a Sender; it does not connect. It refuses a
// missing host, a bad port or From, an unknown Mode, and Plain to a host
// that is not loopback ("localhost", 127.0.0.0/8, ::1), with or without
// credentials.
func New(cfg Config) (*Sender, error) {
	host := cfg.Host
	if host == "" || strings.ContainsAny(host, " \t\r\n/:@") && net.ParseIP(host) == nil {
		return nil, fmt.Errorf("smtp: bad host %q", host)
	}
	if cfg.TLS != STARTTLS && cfg.TLS != ImplicitTLS && cfg.TLS != Plain {
		return nil, fmt.Errorf("smtp: unknown TLS mode %d", int(cfg.TLS))
	}
	port := cfg.Port
	if port == 0 {
		port = map[Mode]int{STARTTLS: 587, ImplicitTLS: 465, Plain: 25}[cfg.TLS]
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("smtp: bad port %d", cfg.Port)
	}
	if cfg.TLS == Plain && !isLoopback(host) {
		if cfg.Username != "" || cfg.Password != "" {
			return nil, fmt.Errorf("smtp: refusing to send credentials unencrypted to %s: plain mode is only for a loopback host; use STARTTLS or implicit TLS", host)
		}
		return nil, fmt.Errorf("smtp: refusing to send mail unencrypted to %s: plain mode is only for a loopback host; use STARTTLS or implicit TLS", host)
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("smtp: a password is set without a username")
	}
	if strings.ContainsAny(cfg.Username, "\x00\r\n") || strings.ContainsAny(cfg.Password, "\x00\r\n") {
		return nil, errors.New("smtp: username or password contains NUL, CR or LF")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp: From %q: %v", cfg.From, err)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if timeout < 0 {
		return nil, fmt.Errorf("smtp: negative timeout %s", timeout)
	}
	s := &Sender{
		cfg:     cfg,
		addr:    net.JoinHostPort(host, strconv.Itoa(port)),
		from:    from,
		timeout: timeout,
		tlsConf: &tls.Config{
			ServerName: host,
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
		},
	}
	if cfg.Password != "" {
		s.secrets = []string{
			cfg.Password,
			base64.StdEncoding.EncodeToString([]byte("\x00" + cfg.Username + "\x00" + cfg.Password)),
			base64.StdEncoding.EncodeToString([]byte(cfg.Password)),
		}
	}
	return s, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Send validates m, renders it with mail.Render and submits it. It gives up
// when ctx ends or the Sender's timeout passes, whichever is first, at any
// step (dialing, TLS handshake, any SMTP exchange). Errors: mail.ErrInvalid
// (nothing was sent), mail.ErrRejected for a permanent (5xx) refusal of the
// sender, recipient or message, the context's error (errors.Is
// context.DeadlineExceeded or context.Canceled), or the connection's or
// server's error; all are prefixed "smtp:" and never contain the password.
func (s *Sender) Send(ctx context.Context, m mail.Message) error {
	if err := mail.Validate(m); err != nil {
		return err
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return err
	}
	raw, err := mail.Render(s.cfg.From, m, time.Now())
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.send(ctx, mail.AddrSpec(to), raw); err != nil {
		return s.scrub(err)
	}
	return nil
}

// step names what failed, for the error message.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func (s *Sender) send(ctx context.Context, rcpt string, raw []byte) (err error) {
	step := "dial " + s.addr
	fail := func(e error) error {
		if e == nil {
			return nil
		}
		return s.classify(ctx, step, e)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	// The connection's deadline is the context's; a cancel (without a
	// deadline) unblocks any read or write at once.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if s.cfg.TLS == ImplicitTLS {
		step = "TLS handshake with " + s.addr
		tc := tls.Client(conn, s.tlsConf.Clone())
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(err)
		}
		conn = tc
	}
	step = "greeting from " + s.addr
	c, err := smtp.NewClient(conn, s.cfg.Host)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	step = "EHLO"
	if err := c.Hello("localhost"); err != nil {
		return fail(err)
	}
	if s.cfg.TLS == STARTTLS {
		step = "STARTTLS"
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fail(fmt.Errorf("%s does not offer STARTTLS, which this configuration requires", s.addr))
		}
		if err := c.StartTLS(s.tlsConf.Clone()); err != nil {
			return fail(err)
		}
	}
	if s.cfg.Username != "" {
		step = fmt.Sprintf("AUTH PLAIN as %q", s.cfg.Username)
		if ok, _ := c.Extension("AUTH"); !ok {
			return fail(errors.New("the server does not offer AUTH"))
		}
		// net/smtp's PlainAuth itself refuses an unencrypted connection
		// unless the host is localhost, 127.0.0.1 or ::1.
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.cfg.Host)); err != nil {
			return fail(err)
		}
	}
	step = "MAIL FROM"
	if err := c.Mail(mail.AddrSpec(s.from)); err != nil {
		return fail(err)
	}
	step = "RCPT TO"
	if err := c.Rcpt(rcpt); err != nil {
		return fail(err)
	}
	step = "DATA"
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write(raw); err != nil {
		return fail(err)
	}
	step = "end of DATA"
	if err := w.Close(); err != nil {
		return fail(err)
	}
	// The message is accepted; a failing QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// classify wraps err with the step it happened in, the context's error when
// the context ended (or the connection deadline taken from it passed), and
// mail.ErrRejected for a permanent SMTP refusal of the message.
func (s *Sender) classify(ctx context.Context, step string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("smtp: %w: %w", ctxErr, &stepError{step, err})
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("smtp: %w: %w", context.DeadlineExceeded, &stepError{step, err})
	}
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 && te.Code < 600 {
		switch step {
		case "MAIL FROM", "RCPT TO", "DATA", "end of DATA":
			return fmt.Errorf("smtp: %w: %w", mail.ErrRejected, &stepError{step, err})
		}
	}
	return fmt.Errorf("smtp: %w", &stepError{step, err})
}

// scrub makes sure no error carries the password, even if a server echoes
// what it got. Where it has to remove something, the result keeps only the
// cleaned text and what errors.Is finds, not the original error.
func (s *Sender) scrub(err error) error {
	msg := err.Error()
	clean := msg
	for _, secret := range s.secrets {
		clean = strings.ReplaceAll(clean, secret, "[redacted]")
	}
	if clean == msg {
		return err
	}
	return &redacted{msg: clean, orig: err}
}

type redacted struct {
	msg  string
	orig error
}

func (e *redacted) Error() string { return e.msg }

// Is lets errors.Is see the original's sentinels without Unwrap handing
// out its text.
func (e *redacted) Is(target error) bool { return errors.Is(e.orig, target) }
