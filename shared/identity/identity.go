// Package identity is who is calling and with what rights: users (integer
// ids, argon2id passwords, activation and reset by one-time mailed tokens),
// browser sessions, API keys with scoped permissions, and the Principal that
// every user-scoped route authorizes against. It stores through the store
// port, seals secrets through the keys port and mails through the mail port.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/ratelimit"
	"github.com/certfleet/certfleet/shared/store"
)

// Table is the store table identity keeps its records in; CounterTable
// holds the user id counter.
const (
	Table        = "identity"
	CounterTable = "meta"
	gsi1         = "gsi1"
)

// Config tunes the service; zero fields take the defaults in New.
type Config struct {
	// PublicURL is the base of links in mails, e.g. https://certs.example.com.
	PublicURL     string
	SessionTTL    time.Duration
	ActivationTTL time.Duration
	ResetTTL      time.Duration
	// Now is the clock; tests move it.
	Now func() time.Time
	// HashMemoryKiB and HashPasses set argon2id's cost; zero means the
	// OWASP baseline (19 MiB, 2 passes). Tests lower them.
	HashMemoryKiB uint32
	HashPasses    uint32
}

// Service is the identity domain service. Safe for concurrent use.
type Service struct {
	st     store.Store
	sealer keys.Sealer
	mail   mail.Sender
	log    *slog.Logger
	cfg    Config
	hash   hashParams
	// accountFails and ipFails count failed logins.
	accountFails, ipFails *ratelimit.Limiter
	// dummyHash is verified against when an account does not exist, so a
	// login takes as long whether or not the email is registered.
	dummyHash string
	worker    workerSecret
}

// New returns the service.
func New(st store.Store, sealer keys.Sealer, m mail.Sender, log *slog.Logger, cfg Config) *Service {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 7 * 24 * time.Hour
	}
	if cfg.ActivationTTL == 0 {
		cfg.ActivationTTL = 48 * time.Hour
	}
	if cfg.ResetTTL == 0 {
		cfg.ResetTTL = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://localhost:8080"
	}
	s := &Service{st: st, sealer: sealer, mail: m, log: log, cfg: cfg, hash: defaultHash}
	if cfg.HashMemoryKiB > 0 {
		s.hash.memoryKiB = cfg.HashMemoryKiB
	}
	if cfg.HashPasses > 0 {
		s.hash.time = cfg.HashPasses
	}
	s.dummyHash = hashPassword("not a real password", s.hash)
	s.accountFails = ratelimit.New(st, "loginfail", loginFailsPerAccount, loginWindow, cfg.Now)
	s.ipFails = ratelimit.New(st, "loginfail", loginFailsPerIP, loginWindow, cfg.Now)
	return s
}

// SessionTTL is how long a session lasts without refresh.
func (s *Service) SessionTTL() time.Duration { return s.cfg.SessionTTL }

// newSecret returns n random bytes, base64url-encoded.
func newSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// digest is how secrets (session ids, one-time tokens, key secrets) are
// stored: a SHA-256 in hex. The secrets are 256-bit random, so a fast hash
// is enough; only a database and its backups see the digests.
func digest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func (s *Service) now() time.Time { return s.cfg.Now() }
