// Package mail is the outgoing-mail port: the notices certfleet sends to
// people (account activation, expiry warnings, failed renewals) as plain-text
// messages with at most one action link.
//
// A Message is checked by Validate before anything leaves the process, and
// every adapter turns it into the same RFC 5322 message with Render, so the
// bytes a developer finds in the local outbox are the bytes an SMTP server
// or SES would get.
//
// Adapters: mail/smtp (any SMTP submission server, over STARTTLS or implicit
// TLS) and mail/outbox (one .eml file per message in a local directory, for
// the local shape without a mail server). Both pass mail/mailtest.
package mail

import (
	"context"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Limits every adapter enforces through Validate.
const (
	// MaxSubjectChars is the longest Subject, counted in characters (runes).
	MaxSubjectChars = 200
	// MaxTextBytes is the largest Text, counted in bytes.
	MaxTextBytes = 64 << 10
	// MaxToBytes is the longest To, display name included.
	MaxToBytes = 320
	// MaxLinkBytes is the longest Link.
	MaxLinkBytes = 2048
)

// Errors callers test with errors.Is.
var (
	// ErrInvalid: the message breaks a rule of Validate; nothing was sent.
	ErrInvalid = errors.New("mail: invalid message")
	// ErrRejected: the mail server refused this message for good (a
	// permanent 5xx answer to the sender, a recipient or the content);
	// sending it again unchanged will fail again.
	ErrRejected = errors.New("mail: message rejected by the server")
)

// Message is one plain-text mail to one person.
type Message struct {
	// To is one address as net/mail parses it: "alice@example.com" or
	// "Alice Example <alice@example.com>". The address itself must be
	// ASCII; the display name may be any text.
	To string
	// Subject is one line of UTF-8 text, at most MaxSubjectChars.
	Subject string
	// Text is the UTF-8 body, at most MaxTextBytes. Line breaks may be
	// "\n", "\r\n" or "\r"; all are sent as CRLF.
	Text string
	// Link is the one action link the message carries, if any (for
	// example an activation URL): an absolute http or https URL that also
	// appears in Text. The outbox logs it so a developer can click it.
	Link string
}

// Sender delivers messages. Safe for concurrent use.
type Sender interface {
	// Send delivers m, or hands it to a server that accepted it for
	// delivery. Errors: ErrInvalid when Validate rejects m (nothing was
	// sent); ErrRejected when the server refused m permanently; the
	// context's error (errors.Is context.DeadlineExceeded or
	// context.Canceled) when ctx ended first; otherwise the transport's
	// error, which may be temporary and worth a retry. Errors never
	// contain credentials.
	Send(ctx context.Context, m Message) error
}

// Validate checks m against the rules every adapter enforces: To is exactly
// one valid address (ASCII address, no header injection), Subject is one
// line of at most MaxSubjectChars characters, Text is UTF-8 of at most
// MaxTextBytes, and Link, when set, is an absolute http(s) URL that appears
// in Text. Every error it returns wraps ErrInvalid.
func Validate(m Message) error {
	if _, err := parseAddress(m.To); err != nil {
		return fmt.Errorf("%w: To: %w", ErrInvalid, err)
	}
	if err := checkHeaderText(m.Subject); err != nil {
		return fmt.Errorf("%w: Subject: %w", ErrInvalid, err)
	}
	if n := utf8.RuneCountInString(m.Subject); n > MaxSubjectChars {
		return fmt.Errorf("%w: Subject has %d characters, over %d", ErrInvalid, n, MaxSubjectChars)
	}
	if len(m.Text) > MaxTextBytes {
		return fmt.Errorf("%w: Text has %d bytes, over %d", ErrInvalid, len(m.Text), MaxTextBytes)
	}
	if !utf8.ValidString(m.Text) {
		return fmt.Errorf("%w: Text is not valid UTF-8", ErrInvalid)
	}
	if m.Link != "" {
		if err := checkLink(m.Link); err != nil {
			return fmt.Errorf("%w: Link: %w", ErrInvalid, err)
		}
		if !strings.Contains(m.Text, m.Link) {
			return fmt.Errorf("%w: Link does not appear in Text", ErrInvalid)
		}
	}
	return nil
}

// ParseAddress parses one address for a From or To header, as net/mail
// does, and also refuses what could not be sent safely: CR, LF or other
// control characters (header injection), more than one address, an empty
// string, a non-ASCII address (internationalized addresses are not
// supported; a display name may be any text), and strings over MaxToBytes.
// Its errors wrap ErrInvalid.
func ParseAddress(s string) (*netmail.Address, error) {
	a, err := parseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%w: address: %w", ErrInvalid, err)
	}
	return a, nil
}

func parseAddress(s string) (*netmail.Address, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty")
	}
	if err := checkHeaderText(s); err != nil {
		return nil, err
	}
	if len(s) > MaxToBytes {
		return nil, fmt.Errorf("%d bytes, over %d", len(s), MaxToBytes)
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not one address: %v", s, err)
	}
	for i := 0; i < len(a.Address); i++ {
		if c := a.Address[i]; c >= utf8.RuneSelf || c <= ' ' || c == 0x7f {
			return nil, fmt.Errorf("%q is not an ASCII address", a.Address)
		}
	}
	if at := strings.LastIndexByte(a.Address, '@'); at <= 0 || at == len(a.Address)-1 {
		return nil, fmt.Errorf("%q has no domain", a.Address)
	}
	if len(a.Address) > 254 {
		return nil, fmt.Errorf("address of %d bytes, over 254", len(a.Address))
	}
	return a, nil
}

// AddrSpec returns the address of a as it goes into an SMTP envelope
// (MAIL FROM, RCPT TO): local part quoted where needed, no angle brackets.
func AddrSpec(a *netmail.Address) string {
	s := (&netmail.Address{Address: a.Address}).String()
	return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
}

// checkHeaderText refuses CR and LF (they would end the header and start
// another: header injection), other control characters and invalid UTF-8.
// A tab is allowed.
func checkHeaderText(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("contains CR or LF")
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		if (r < ' ' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("contains control character %U", r)
		}
	}
	return nil
}

func checkLink(link string) error {
	if len(link) > MaxLinkBytes {
		return fmt.Errorf("%d bytes, over %d", len(link), MaxLinkBytes)
	}
	for i := 0; i < len(link); i++ {
		if c := link[i]; c <= ' ' || c == 0x7f {
			return errors.New("contains a space or control character")
		}
	}
	u, err := url.Parse(link)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", link)
	}
	return nil
}
