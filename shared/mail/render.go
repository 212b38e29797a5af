package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"
)

// lineLimit is the longest header or body line Render writes where it has
// a choice (RFC 2047 asks for 76 on lines with encoded words, RFC 2045 for
// 76 on quoted-printable lines). Only an address too long to fit is longer,
// and never more than 998 (RFC 5322).
const lineLimit = 76

// Render returns m as an RFC 5322 message from the address from, dated now:
// Date, Message-ID, From, To, Subject (RFC 2047 encoded words when it is not
// plain ASCII), MIME-Version, Content-Type text/plain; charset=utf-8, and the
// body in quoted-printable with CRLF line breaks. The result is 7-bit ASCII
// with no line over 998 bytes, so any SMTP server takes it as it is; lines
// of the body that start with "." or "From " are encoded so no transport or
// mbox file changes them.
//
// Render validates m (errors wrap ErrInvalid) and from (errors do not: a
// bad sender address is the adapter's configuration, not the message).
// Every adapter sends what Render returns, so all of them send the same
// bytes.
func Render(from string, m Message, now time.Time) ([]byte, error) {
	if err := Validate(m); err != nil {
		return nil, err
	}
	sender, err := parseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("mail: sender address: %v", err)
	}
	to, err := parseAddress(m.To)
	if err != nil {
		return nil, fmt.Errorf("%w: To: %w", ErrInvalid, err)
	}
	var b bytes.Buffer
	b.Grow(len(m.Text)*11/10 + 512)
	header(&b, "Date", now.Format(time.RFC1123Z))
	header(&b, "Message-ID", messageID(sender.Address))
	b.WriteString(formatAddress("From", sender))
	b.WriteString(formatAddress("To", to))
	b.WriteString(formatSubject(m.Subject))
	header(&b, "MIME-Version", "1.0")
	header(&b, "Content-Type", "text/plain; charset=utf-8")
	header(&b, "Content-Transfer-Encoding", "quoted-printable")
	header(&b, "Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	encodeQuotedPrintable(&b, m.Text)
	return b.Bytes(), nil
}

func header(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteString(": ")
	b.WriteString(value)
	b.WriteString("\r\n")
}

// messageID is a fresh <random@domain-of-sender>.
func messageID(sender string) string {
	var r [16]byte
	rand.Read(r[:])
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	return "<" + hex.EncodeToString(r[:]) + "@" + domain + ">"
}

// formatSubject writes the Subject header: plain when the text is short
// printable ASCII that every parser gives back unchanged, else encoded
// words, one per folded line.
func formatSubject(s string) string {
	const name = "Subject: "
	switch {
	case s == "":
		return "Subject:\r\n"
	case isPlainPhrase(s, false) && len(name)+len(s) <= lineLimit:
		return name + s + "\r\n"
	}
	return name + encodeWords(s, len(name)) + "\r\n"
}

// formatAddress writes a From or To header for a: the display name plain
// or as encoded words, then the address in angle brackets, folded before it
// when the line would be too long.
func formatAddress(name string, a *netmail.Address) string {
	spec := (&netmail.Address{Address: a.Address}).String()
	col := len(name) + 2
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(": ")
	if a.Name != "" {
		if isPlainPhrase(a.Name, true) && col+len(a.Name) <= lineLimit {
			b.WriteString(a.Name)
			col += len(a.Name)
		} else {
			words := encodeWords(a.Name, col)
			b.WriteString(words)
			if nl := strings.LastIndexByte(words, '\n'); nl >= 0 {
				col = len(words) - nl - 1
			} else {
				col += len(words)
			}
		}
		if col+1+len(spec) > lineLimit {
			b.WriteString("\r\n")
		}
		b.WriteString(" ")
	}
	b.WriteString(spec)
	b.WriteString("\r\n")
	return b.String()
}

// isPlainPhrase reports whether s survives a header parser unchanged when
// written as it is: printable ASCII words split by single spaces, no "=?"
// that a decoder could take for an encoded word, and for a display name
// (atomsOnly) no character outside RFC 5322 atext.
func isPlainPhrase(s string, atomsOnly bool) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' || strings.Contains(s, "  ") || strings.Contains(s, "=?") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
		case c < '!' || c > '~':
			return false
		case atomsOnly && !isAtext(c):
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// encodeWords writes s as RFC 2047 "Q" encoded words in UTF-8, each on its
// own line (folded with CRLF and a space) so no line passes lineLimit; the
// first word starts at column col. A character's bytes never straddle two
// words. Only letters, digits and "!*+-/" stay literal, the set RFC 2047
// allows in every place an encoded word may stand; a space becomes "_".
func encodeWords(s string, col int) string {
	const prefix, suffix = "=?utf-8?q?", "?="
	var b strings.Builder
	word := make([]byte, 0, lineLimit)
	flush := func() {
		if b.Len() > 0 {
			b.WriteString("\r\n ")
		}
		b.WriteString(prefix)
		b.Write(word)
		b.WriteString(suffix)
		word = word[:0]
		col = 1 // the next word starts a continuation line
	}
	var enc []byte
	for _, r := range s {
		enc = enc[:0]
		for _, c := range []byte(string(r)) {
			switch {
			case c == ' ':
				enc = append(enc, '_')
			case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!*+-/", c) >= 0:
				enc = append(enc, c)
			default:
				enc = append(enc, '=', upperhex[c>>4], upperhex[c&15])
			}
		}
		if len(word) > 0 && col+len(prefix)+len(word)+len(enc)+len(suffix) > lineLimit {
			flush()
		}
		word = append(word, enc...)
	}
	flush()
	return b.String()
}

const upperhex = "0123456789ABCDEF"

// encodeQuotedPrintable writes text as a quoted-printable body (RFC 2045)
// with CRLF line breaks: every line break of text ("\n", "\r\n" or "\r")
// becomes a hard CRLF, lines are soft-broken to stay within lineLimit, and
// a text that does not end in a line break ends with a soft break, so
// decoding gives back exactly the text with its line breaks as CRLF. A
// "." or the "F" of "From " at the start of an encoded line is encoded, so
// neither SMTP dot-stuffing nor an mbox writer has a reason to touch it.
func encodeQuotedPrintable(b *bytes.Buffer, text string) {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		last := i == len(lines)-1
		if last && line == "" {
			break // text ended with a line break, or was empty
		}
		col := 0
		for j := 0; j < len(line); j++ {
			enc := qpToken(line, j, col)
			// A soft break "=" needs one column; the last token before a
			// hard break may use it instead.
			hardBreakNext := j == len(line)-1 && !last
			if col+len(enc) > lineLimit-1 && !(hardBreakNext && col+len(enc) <= lineLimit) {
				b.WriteString("=\r\n")
				col = 0
				enc = qpToken(line, j, col)
			}
			b.WriteString(enc)
			col += len(enc)
		}
		if last {
			b.WriteString("=\r\n") // no line break after the last line
		} else {
			b.WriteString("\r\n")
		}
	}
}

// qpToken is the encoding of line[j] when it lands at column col.
func qpToken(line string, j, col int) string {
	c := line[j]
	literal := ('!' <= c && c <= '~' && c != '=') || ((c == ' ' || c == '\t') && j < len(line)-1)
	if col == 0 && (c == '.' || (c == 'F' && strings.HasPrefix(line[j:], "From "))) {
		literal = false
	}
	if literal {
		return string(c)
	}
	return string([]byte{'=', upperhex[c>>4], upperhex[c&15]})
}
