// Package mailtest is the conformance suite for mail.Sender: every adapter's
// tests call Run with a Sender and a way to read back what its backend got.
//
// The suite checks the message as a receiver sees it: parsed with net/mail,
// the To address, the decoded Subject and the text decoded from
// quoted-printable must be those that were sent, for plain ASCII, non-ASCII
// text, long lines and lines that transports like to alter (a leading "."
// and "From "). It also checks that every message Validate refuses comes
// back as mail.ErrInvalid and that nothing reaches the backend then.
package mailtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/mail"
)

// Run runs the suite against s. received must return the raw bytes (the
// RFC 5322 message) that the backend got for the most recent message, and
// fail t when it has none. Subtests run one after another, since received
// only knows the last message.
func Run(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s mail.Sender, received func(t *testing.T) []byte)
	}{
		{"ASCII", testASCII},
		{"NonASCII", testNonASCII},
		{"LongLines", testLongLines},
		{"DotAndFromLines", testDotAndFrom},
		{"LineBreaks", testLineBreaks},
		{"AwkwardSubjects", testAwkwardSubjects},
		{"Limits", testLimits},
		{"MessageIDsDiffer", testMessageIDsDiffer},
		{"Invalid", testInvalid},
		{"Concurrent", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, s, received) })
	}
}

// Received is a message as a receiver parses it.
type Received struct {
	Header  netmail.Header
	To      *netmail.Address
	Subject string
	// Text is the decoded body with CRLF line breaks turned into "\n".
	Text string
	Raw  []byte
}

// Parse reads raw as a receiver would and checks the framing Render
// promises: 7-bit ASCII, CRLF line breaks, no line over 998 bytes, the MIME
// headers of a quoted-printable text/plain UTF-8 body, a Date and a
// Message-ID.
func Parse(t *testing.T, raw []byte) Received {
	t.Helper()
	for i, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d has %d bytes, over RFC 5322's 998", i+1, len(line))
		}
		if bytes.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		for _, c := range line {
			if c >= 0x80 || c == 0 {
				t.Errorf("line %d is not 7-bit ASCII: %q", i+1, line)
				break
			}
		}
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("net/mail cannot read the message: %v\n%s", err, raw)
	}
	h := msg.Header
	if v := h.Get("MIME-Version"); v != "1.0" {
		t.Errorf("MIME-Version = %q", v)
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "text/plain" || !strings.EqualFold(params["charset"], "utf-8") {
		t.Errorf("Content-Type = %q (%v); want text/plain; charset=utf-8", h.Get("Content-Type"), err)
	}
	if v := h.Get("Content-Transfer-Encoding"); !strings.EqualFold(v, "quoted-printable") {
		t.Errorf("Content-Transfer-Encoding = %q; want quoted-printable", v)
	}
	if d, err := h.Date(); err != nil {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	} else if age := time.Since(d); age < -time.Minute || age > 10*time.Minute {
		t.Errorf("Date %s is %s away from now", d, age)
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, ">") || strings.Count(id, "@") != 1 {
		t.Errorf("Message-ID = %q; want <left@right>", id)
	}
	if _, err := netmail.ParseAddress(h.Get("From")); err != nil {
		t.Errorf("From %q: %v", h.Get("From"), err)
	}
	to, err := netmail.ParseAddress(h.Get("To"))
	if err != nil {
		t.Fatalf("To %q: %v", h.Get("To"), err)
	}
	if len(h["To"]) != 1 || len(h["Subject"]) != 1 || len(h["From"]) != 1 {
		t.Errorf("want one each of To, Subject, From; got %d, %d, %d", len(h["To"]), len(h["Subject"]), len(h["From"]))
	}
	if len(h["Bcc"]) != 0 || len(h["Cc"]) != 0 {
		t.Errorf("unexpected Cc or Bcc header: %v %v", h["Cc"], h["Bcc"])
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if err != nil {
		t.Errorf("Subject %q does not decode: %v", h.Get("Subject"), err)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatalf("body is not quoted-printable: %v", err)
	}
	if !utf8.Valid(body) {
		t.Errorf("decoded body is not UTF-8")
	}
	return Received{
		Header:  h,
		To:      to,
		Subject: subject,
		Text:    strings.ReplaceAll(string(body), "\r\n", "\n"),
		Raw:     raw,
	}
}

// sendAndCheck sends m, reads back what arrived and compares it with m.
func sendAndCheck(t *testing.T, s mail.Sender, received func(t *testing.T) []byte, m mail.Message) Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Send(ctx, m); err != nil {
		t.Fatalf("Send(To %q, Subject %q): %v", m.To, m.Subject, err)
	}
	got := Parse(t, received(t))
	want, err := netmail.ParseAddress(m.To)
	if err != nil {
		t.Fatalf("the suite sent a To that net/mail cannot parse: %v", err)
	}
	if got.To.Address != want.Address || got.To.Name != want.Name {
		t.Errorf("To: got name %q address %q; want name %q address %q", got.To.Name, got.To.Address, want.Name, want.Address)
	}
	if got.Subject != m.Subject {
		t.Errorf("Subject:\n got  %q\n want %q\n header %q", got.Subject, m.Subject, got.Header.Get("Subject"))
	}
	if wantText := normalize(m.Text); got.Text != wantText {
		t.Errorf("Text differs:\n%s", diff(got.Text, wantText))
	}
	return got
}

// normalize turns every line break into "\n".
func normalize(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

func diff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if i >= len(g) || i >= len(w) || gl != wl {
			return fmt.Sprintf("first difference at line %d (got %d lines, want %d):\n got  %q\n want %q", i+1, len(g), len(w), gl, wl)
		}
	}
	return "same lines"
}

func testASCII(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	link := "https://certfleet.example/activate?token=abc123&u=7"
	sendAndCheck(t, s, received, mail.Message{
		To:      "alice@example.com",
		Subject: "Activate your certfleet account",
		Text:    "Hello Alice,\n\nopen this link to activate your account:\n" + link + "\n\n-- certfleet\n",
		Link:    link,
	})
	sendAndCheck(t, s, received, mail.Message{
		To:      "Bob Example <bob@example.org>",
		Subject: "Certificate www.example.org expires in 7 days",
		Text:    "Tabs\tand = signs = are fine; 100% of them.\nTrailing spaces   \nand a tab\t\nend",
	})
	sendAndCheck(t, s, received, mail.Message{
		To:      `"Example, Carol" <carol+certs@sub.example.net>`,
		Subject: "Quoted name",
		Text:    "",
	})
}

func testNonASCII(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	sendAndCheck(t, s, received, mail.Message{
		To:      "Zoë Ångström <zoe@example.com>",
		Subject: "证书已签发 — café ✓ 🔒",
		Text:    "你好，\n\nCertificat émis pour « www.example.fr ».\nЗдравствуйте! 🔐\n日本語のテキスト\n",
	})
	sendAndCheck(t, s, received, mail.Message{
		To:      "李雷 <lilei@example.cn>",
		Subject: strings.Repeat("续期失败 ", 30),
		Text:    strings.Repeat("续期失败，请检查 DNS 记录。", 200),
	})
}

func testLongLines(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	var words []string
	for i := range 400 {
		words = append(words, fmt.Sprintf("word%d", i))
	}
	sendAndCheck(t, s, received, mail.Message{
		To:      "dave@example.com",
		Subject: "Long lines: " + strings.Repeat("x", 180),
		Text: strings.Repeat("A", 5000) + "\n" +
			strings.Join(words, " ") + "\n" +
			strings.Repeat("==", 1000) + "\n" +
			strings.Repeat("é", 1200) + "\n" +
			strings.Repeat(" ", 300) + "\n" +
			strings.Repeat(".", 300) + "\n" +
			strings.Repeat("ab ", 500),
	})
}

func testDotAndFrom(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	sendAndCheck(t, s, received, mail.Message{
		To:      "erin@example.com",
		Subject: "Lines that transports alter",
		Text: ".\n" +
			".hidden line\n" +
			"..two dots\n" +
			"From the certfleet team\n" +
			"From \n" +
			">From quoted\n" +
			"a line, then a lone dot:\n.\n" +
			"From: not a header\n" +
			strings.Repeat("x", 75) + ".dot after a soft break\n" +
			strings.Repeat("y", 75) + "From after a soft break\n" +
			".",
	})
}

func testLineBreaks(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	for _, text := range []string{
		"no line break at the end",
		"one at the end\n",
		"\n\nleading blank lines and two trailing\n\n",
		"CRLF\r\nbreaks\r\n",
		"lone CR\rbreaks\r",
		"mixed\r\n\n\r\rend",
		"\n",
	} {
		sendAndCheck(t, s, received, mail.Message{To: "frank@example.com", Subject: "Line breaks", Text: text})
	}
}

func testAwkwardSubjects(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	for _, subject := range []string{
		"",
		"=?utf-8?q?not_an_encoded_word?=",
		"  leading and trailing spaces  ",
		"double  spaces and\ta tab",
		"question? under_score = equals",
		`"quotes" (parens) <angles> [brackets] \backslash`,
		"Re: [certfleet] 42",
		"é",
		strings.Repeat("ü", mail.MaxSubjectChars),
	} {
		sendAndCheck(t, s, received, mail.Message{To: "grace@example.com", Subject: subject, Text: "subject test"})
	}
}

func testLimits(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	text := strings.Repeat("0123456789abcdef", mail.MaxTextBytes/16-1) + "ends here\n....."
	text += strings.Repeat("z", mail.MaxTextBytes-len(text))
	sendAndCheck(t, s, received, mail.Message{
		To:      "heidi@example.com",
		Subject: strings.Repeat("s", mail.MaxSubjectChars),
		Text:    text,
	})
	sendAndCheck(t, s, received, mail.Message{
		To:      "Heidi <" + strings.Repeat("h", 64) + "@" + strings.Repeat("d", 60) + ".example.com>",
		Subject: strings.Repeat("日", mail.MaxSubjectChars),
		Text:    strings.Repeat("ß", mail.MaxTextBytes/2),
	})
}

func testMessageIDsDiffer(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	m := mail.Message{To: "ivan@example.com", Subject: "Same message twice", Text: "same\n"}
	a := sendAndCheck(t, s, received, m)
	b := sendAndCheck(t, s, received, m)
	if a.Header.Get("Message-ID") == b.Header.Get("Message-ID") {
		t.Errorf("two sends have the same Message-ID %s", a.Header.Get("Message-ID"))
	}
}

func testInvalid(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	marker := sendAndCheck(t, s, received, mail.Message{
		To: "judy@example.com", Subject: "The last valid message", Text: "anything after this was refused\n",
	})
	good := mail.Message{To: "judy@example.com", Subject: "fine", Text: "fine\n"}
	cases := []struct {
		name string
		edit func(m *mail.Message)
	}{
		{"CRLF in To", func(m *mail.Message) { m.To = "judy@example.com\r\nBcc: mallory@example.com" }},
		{"LF in To", func(m *mail.Message) { m.To = "judy@example.com\nBcc: mallory@example.com" }},
		{"CR in To", func(m *mail.Message) { m.To = "judy@example.com\rBcc: mallory@example.com" }},
		{"trailing CRLF in To", func(m *mail.Message) { m.To = "judy@example.com\r\n" }},
		{"CRLF in To name", func(m *mail.Message) { m.To = "Judy\r\nBcc: mallory@example.com <judy@example.com>" }},
		{"CRLF in Subject", func(m *mail.Message) { m.Subject = "hello\r\nBcc: mallory@example.com" }},
		{"LF in Subject", func(m *mail.Message) { m.Subject = "hello\nBcc: mallory@example.com" }},
		{"CR in Subject", func(m *mail.Message) { m.Subject = "hello\rBcc: mallory@example.com" }},
		{"trailing LF in Subject", func(m *mail.Message) { m.Subject = "hello\n" }},
		{"NUL in Subject", func(m *mail.Message) { m.Subject = "hello\x00" }},
		{"two addresses", func(m *mail.Message) { m.To = "judy@example.com, mallory@example.com" }},
		{"two addresses with semicolon", func(m *mail.Message) { m.To = "judy@example.com; mallory@example.com" }},
		{"group", func(m *mail.Message) { m.To = "friends: judy@example.com, mallory@example.com;" }},
		{"empty To", func(m *mail.Message) { m.To = "" }},
		{"blank To", func(m *mail.Message) { m.To = "   " }},
		{"To without domain", func(m *mail.Message) { m.To = "judy" }},
		{"To not an address", func(m *mail.Message) { m.To = "judy at example dot com" }},
		{"non-ASCII address", func(m *mail.Message) { m.To = "jüdy@example.com" }},
		{"oversized To", func(m *mail.Message) { m.To = strings.Repeat("j", mail.MaxToBytes) + "@example.com" }},
		{"oversized Subject", func(m *mail.Message) { m.Subject = strings.Repeat("s", mail.MaxSubjectChars+1) }},
		{"oversized non-ASCII Subject", func(m *mail.Message) { m.Subject = strings.Repeat("日", mail.MaxSubjectChars+1) }},
		{"oversized Text", func(m *mail.Message) { m.Text = strings.Repeat("t", mail.MaxTextBytes+1) }},
		{"invalid UTF-8 Text", func(m *mail.Message) { m.Text = "bad \xff byte" }},
		{"invalid UTF-8 Subject", func(m *mail.Message) { m.Subject = "bad \xc3 byte" }},
		{"Link not in Text", func(m *mail.Message) { m.Link = "https://certfleet.example/activate?t=1" }},
		{"Link not http", func(m *mail.Message) {
			m.Link = "javascript:alert(1)"
			m.Text += m.Link
		}},
		{"relative Link", func(m *mail.Message) {
			m.Link = "/activate?t=1"
			m.Text += m.Link
		}},
	}
	ctx := context.Background()
	for _, c := range cases {
		m := good
		c.edit(&m)
		err := s.Send(ctx, m)
		if !errors.Is(err, mail.ErrInvalid) {
			t.Errorf("%s: Send returned %v; want mail.ErrInvalid", c.name, err)
		}
		if verr := mail.Validate(m); !errors.Is(verr, mail.ErrInvalid) {
			t.Errorf("%s: Validate returned %v; want mail.ErrInvalid", c.name, verr)
		}
	}
	if got := received(t); !bytes.Equal(got, marker.Raw) {
		t.Errorf("an invalid message reached the backend; the last one received is now:\n%s", got)
	}
	if err := s.Send(ctx, good); err != nil {
		t.Fatalf("a valid message after the invalid ones: %v", err)
	}
}

func testConcurrent(t *testing.T, s mail.Sender, received func(t *testing.T) []byte) {
	const n = 8
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Send(ctx, mail.Message{
				To:      fmt.Sprintf("worker%d@example.com", i),
				Subject: fmt.Sprintf("Concurrent %d", i),
				Text:    fmt.Sprintf("message %d\n", i),
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Send %d: %v", i, err)
		}
	}
	last := Parse(t, received(t))
	if !strings.HasPrefix(last.Subject, "Concurrent ") {
		t.Errorf("the last message received is %q; want one of the concurrent ones", last.Subject)
	}
}
