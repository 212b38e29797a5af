package mail_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/mail/mailtest"
)

const from = "certfleet <noreply@certfleet.example>"

func TestValidate(t *testing.T) {
	ok := []mail.Message{
		{To: "a@example.com"},
		{To: "A <a@example.com>", Subject: "s", Text: "t"},
		{To: `"A, B" <a@example.com>`, Subject: "tab\there"},
		{To: "Zoë <zoe@example.com>", Subject: strings.Repeat("日", mail.MaxSubjectChars), Text: strings.Repeat("x", mail.MaxTextBytes)},
		{To: "a@example.com", Text: "go to http://localhost:8080/activate?t=1 now", Link: "http://localhost:8080/activate?t=1"},
	}
	for _, m := range ok {
		if err := mail.Validate(m); err != nil {
			t.Errorf("Validate(%+v): %v", m, err)
		}
	}
	bad := map[string]mail.Message{
		"empty To":          {},
		"CRLF in To":        {To: "a@example.com\r\nBcc: b@example.com"},
		"LF in Subject":     {To: "a@example.com", Subject: "a\nBcc: b@example.com"},
		"DEL in Subject":    {To: "a@example.com", Subject: "a\x7f"},
		"C1 in Subject":     {To: "a@example.com", Subject: "a\u0085b"},
		"list":              {To: "a@example.com, b@example.com"},
		"long Subject":      {To: "a@example.com", Subject: strings.Repeat("x", mail.MaxSubjectChars+1)},
		"long Text":         {To: "a@example.com", Text: strings.Repeat("x", mail.MaxTextBytes+1)},
		"Link not in Text":  {To: "a@example.com", Text: "x", Link: "https://e.example/"},
		"Link with space":   {To: "a@example.com", Text: "https://e.example/ a", Link: "https://e.example/ a"},
		"Link without host": {To: "a@example.com", Text: "https:///x", Link: "https:///x"},
		"ftp Link":          {To: "a@example.com", Text: "ftp://e.example/", Link: "ftp://e.example/"},
	}
	for name, m := range bad {
		if err := mail.Validate(m); !errors.Is(err, mail.ErrInvalid) {
			t.Errorf("%s: Validate = %v; want ErrInvalid", name, err)
		}
	}
}

func TestRenderRefusesBadSender(t *testing.T) {
	for _, f := range []string{"", "nobody", "a@example.com\r\nBcc: x@example.com", "a@example.com, b@example.com"} {
		_, err := mail.Render(f, mail.Message{To: "a@example.com"}, time.Now())
		if err == nil {
			t.Errorf("Render with sender %q succeeded", f)
		} else if errors.Is(err, mail.ErrInvalid) {
			t.Errorf("Render with sender %q: %v wraps ErrInvalid, which is for the message", f, err)
		}
	}
}

func TestRenderExample(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("", 8*3600))
	raw, err := mail.Render(from, mail.Message{
		To:      "Alice <alice@example.com>",
		Subject: "Activate your account",
		Text:    "Hi,\n.open https://e.example/a?x=1\nFrom here \n",
		Link:    "https://e.example/a?x=1",
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no header/body separator:\n%s", raw)
	}
	for _, want := range []string{
		"Date: Wed, 04 Mar 2026 05:06:07 +0800",
		"From: certfleet <noreply@certfleet.example>",
		"To: Alice <alice@example.com>",
		"Subject: Activate your account",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: quoted-printable",
	} {
		if !bytes.Contains(head, []byte(want+"\r\n")) {
			t.Errorf("header lacks %q:\n%s", want, head)
		}
	}
	if !bytes.Contains(head, []byte("@certfleet.example>\r\n")) {
		t.Errorf("Message-ID is not on the sender's domain:\n%s", head)
	}
	if want := "Hi,\r\n=2Eopen https://e.example/a?x=3D1\r\n=46rom here=20\r\n"; string(body) != want {
		t.Errorf("body:\n%q\nwant\n%q", body, want)
	}
}

// TestRenderRoundTrip renders random messages and reads them back the way
// mailtest does, also checking Render's own line length of 76 (only an
// address may be longer).
func TestRenderRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	alphabet := []rune("aZ09 \t.=?_-!*+/\"\\()<>,;:@[]~From\r\n\nüé日本🔒\u00a0\u200b")
	randText := func(n int) string {
		var b strings.Builder
		for range n {
			if r.IntN(20) == 0 {
				b.WriteString([]string{"From ", ".", "=?", "\r\n", " \n", "\t\r"}[r.IntN(6)])
				continue
			}
			b.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	oneLine := func(s string) string { return strings.NewReplacer("\r", "", "\n", "").Replace(s) }
	for i := range 500 {
		subject := []rune(oneLine(randText(r.IntN(260))))
		if len(subject) > mail.MaxSubjectChars {
			subject = subject[:mail.MaxSubjectChars]
		}
		name := strings.Trim(oneLine(randText(r.IntN(40))), " \t")
		to := "user" + string(rune('a'+i%26)) + "@example.com"
		if name != "" {
			to = mimeQuote(name) + " <" + to + ">"
		}
		m := mail.Message{To: to, Subject: string(subject), Text: randText(r.IntN(3000))}
		if err := mail.Validate(m); err != nil {
			t.Fatalf("case %d: generated an invalid message: %v (%+v)", i, err, m)
		}
		raw, err := mail.Render(from, m, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for j, line := range strings.Split(string(raw), "\r\n") {
			if len(line) > 76 && !strings.Contains(line, "@") {
				t.Errorf("case %d line %d has %d bytes: %q", i, j+1, len(line), line)
			}
		}
		got := mailtest.Parse(t, raw)
		if got.Subject != m.Subject {
			t.Errorf("case %d: Subject %q, want %q (header %q)", i, got.Subject, m.Subject, got.Header.Get("Subject"))
		}
		if got.To.Name != name {
			t.Errorf("case %d: To name %q, want %q (header %q)", i, got.To.Name, name, got.Header.Get("To"))
		}
		want := strings.ReplaceAll(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\r", "\n")
		if got.Text != want {
			t.Errorf("case %d: Text %q, want %q", i, got.Text, want)
		}
		if t.Failed() {
			t.Logf("raw:\n%s", raw)
			return
		}
	}
}

// mimeQuote writes s as an RFC 5322 quoted-string, so that net/mail gives
// back s exactly as the display name.
func mimeQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

func FuzzRender(f *testing.F) {
	f.Add("Alice <a@example.com>", "subject", "text\n.\nFrom x")
	f.Add("Zoë <z@example.com>", "=?utf-8?q?x?=", "\r\r\n\n")
	f.Fuzz(func(t *testing.T, to, subject, text string) {
		m := mail.Message{To: to, Subject: subject, Text: text}
		if mail.Validate(m) != nil {
			return
		}
		raw, err := mail.Render(from, m, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(raw) {
			t.Fatal("not UTF-8")
		}
		got := mailtest.Parse(t, raw)
		if got.Subject != subject {
			t.Errorf("Subject %q, want %q", got.Subject, subject)
		}
		if want := strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\r", "\n"); got.Text != want {
			t.Errorf("Text %q, want %q", got.Text, want)
		}
	})
}
