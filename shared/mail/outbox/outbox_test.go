package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/internal/testlog"

	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/mail/mailtest"
	"github.com/certfleet/certfleet/shared/mail/outbox"
)

func emlFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".eml") {
			names = append(names, e.Name())
		} else {
			t.Errorf("unexpected file left in the outbox: %s", e.Name())
		}
	}
	slices.Sort(names)
	return names
}

func newest(t *testing.T, dir string) []byte {
	t.Helper()
	names := emlFiles(t, dir)
	if len(names) == 0 {
		t.Fatal("the outbox is empty")
	}
	raw, err := os.ReadFile(filepath.Join(dir, names[len(names)-1]))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestConformance(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	s, err := outbox.New(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mailtest.Run(t, s, func(t *testing.T) []byte { return newest(t, dir) })
}

func TestDirAndFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "outbox")
	s, err := outbox.New(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("outbox directory mode %v; want 0700", fi.Mode().Perm())
	}
	if err := s.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "mode", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	names := emlFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("want 1 file, got %v", names)
	}
	fi, err = os.Stat(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("message file mode %v; want 0600", fi.Mode().Perm())
	}
}

func TestFileNamesSortInSendOrder(t *testing.T) {
	dir := t.TempDir()
	s, err := outbox.New(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		m := mail.Message{To: "a@example.com", Subject: "order " + string(rune('A'+i%26)) + string(rune('0'+i/26)), Text: "x"}
		if err := s.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	names := emlFiles(t, dir)
	if len(names) != n {
		t.Fatalf("want %d files, got %d", n, len(names))
	}
	for i, name := range names {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want := "Subject: order " + string(rune('A'+i%26)) + string(rune('0'+i/26)) + "\r\n"
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("file %d (%s) is not message %d", i, name, i)
		}
	}
}

func TestLogLine(t *testing.T) {
	dir := t.TempDir()
	var buf testlog.Buffer
	s, err := outbox.New(dir, slog.New(slog.NewJSONHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	link := "https://certfleet.example/activate?token=t0k3n&user=42"
	m := mail.Message{
		To:      "Alice <alice@example.com>",
		Subject: "Activate your account",
		Text:    "Open " + link + " to activate.\n",
		Link:    link,
	}
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one log line, got %d:\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, emlFiles(t, dir)[0])
	for k, want := range map[string]string{
		"msg": "mail written to outbox", "to": m.To, "subject": m.Subject, "file": file, "link": link,
	} {
		if rec[k] != want {
			t.Errorf("log %q = %v; want %q", k, rec[k], want)
		}
	}
	if !strings.Contains(lines[0], link) {
		t.Errorf("the log line does not contain the link: %s", lines[0])
	}
}

func TestInvalidWritesNothingAndLogsNothing(t *testing.T) {
	dir := t.TempDir()
	var buf testlog.Buffer
	s, err := outbox.New(dir, slog.New(slog.NewJSONHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), mail.Message{To: "a@example.com\r\nBcc: b@example.com", Subject: "x", Text: "x"})
	if !errors.Is(err, mail.ErrInvalid) {
		t.Fatalf("got %v; want ErrInvalid", err)
	}
	if names := emlFiles(t, dir); len(names) != 0 || buf.String() != "" {
		t.Errorf("files %v, log %q; want none", names, buf.String())
	}
}

func TestCanceledContext(t *testing.T) {
	dir := t.TempDir()
	s, err := outbox.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, mail.Message{To: "a@example.com", Subject: "x", Text: "x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v; want context.Canceled", err)
	}
	if names := emlFiles(t, dir); len(names) != 0 {
		t.Errorf("files %v; want none", names)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := outbox.New("", nil); err == nil {
		t.Error("New(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.New(file, nil); err == nil {
		t.Error("New on a regular file succeeded")
	}
}
