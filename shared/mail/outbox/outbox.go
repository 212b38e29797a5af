// Package outbox is the mail adapter for the local shape without a mail
// server: every message becomes one .eml file (the RFC 5322 bytes that
// mail/smtp would send) in a directory, and one log line names the file and
// the message's action link, so a developer can open or click it.
package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/mail"
)

// DefaultFrom is the sender address written into outbox messages.
const DefaultFrom = "certfleet <certfleet@localhost>"

// Sender writes messages to a directory. Safe for concurrent use, also by
// several processes sharing the directory.
type Sender struct {
	dir  string
	log  *slog.Logger
	from string

	mu   sync.Mutex
	last time.Time // the newest file-name time handed out
}

var _ mail.Sender = (*Sender)(nil)

// New returns a Sender that writes into dir, creating it (mode 0700) if it
// does not exist. log gets one line per message; nil means slog.Default().
func New(dir string, log *slog.Logger) (*Sender, error) {
	if dir == "" {
		return nil, errors.New("outbox: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("outbox: %s is not a directory", dir)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sender{dir: dir, log: log, from: DefaultFrom}, nil
}

// Dir is the directory the Sender writes into.
func (s *Sender) Dir() string { return s.dir }

// Send writes m as one new file in the directory, named
// <UTC time to the nanosecond>-<random>.eml so that names sort in the order
// messages were sent (within one process) and never collide, with mode
// 0600. The file appears whole or not at all: it is written under a hidden
// temporary name, synced, then renamed. Errors: mail.ErrInvalid (no file
// is written), the context's error, or the file system's.
func (s *Sender) Send(ctx context.Context, m mail.Message) error {
	if err := mail.Validate(m); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	now := s.tick()
	raw, err := mail.Render(s.from, m, now)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	var r [4]byte
	rand.Read(r[:])
	name := now.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(r[:]) + ".eml"
	path := filepath.Join(s.dir, name)
	if err := writeAtomic(s.dir, path, raw); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	s.log.InfoContext(ctx, "mail written to outbox",
		slog.String("to", m.To),
		slog.String("subject", m.Subject),
		slog.String("file", path),
		slog.String("link", m.Link))
	return nil
}

// tick returns the current time, moved past the last one handed out so
// that file names sort in send order even with a coarse clock.
func (s *Sender) tick() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !now.After(s.last) {
		now = s.last.Add(time.Nanosecond)
	}
	s.last = now
	return now
}

func writeAtomic(dir, path string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, ".writing-*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
