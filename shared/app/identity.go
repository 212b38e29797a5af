package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/identity/passkey"
	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/mail/outbox"
	"github.com/certfleet/certfleet/shared/mail/smtp"
	"github.com/certfleet/certfleet/shared/ratelimit"
)

// wireIdentity builds the identity services and the guard every
// user-scoped route goes through.
func (a *App) wireIdentity(m mail.Sender) error {
	a.Identity = identity.New(a.Store, a.Sealer, m, a.Log, identity.Config{PublicURL: a.Config.PublicURL})
	a.DeviceTokens = devicetoken.New(a.Store, a.Sealer, devicetoken.Config{})
	public, err := url.Parse(a.Config.PublicURL)
	if err != nil {
		return fmt.Errorf("app: public URL: %w", err)
	}
	a.Passkeys, err = passkey.New(a.Store, a.Identity, passkey.Config{
		RPID: public.Hostname(), Origins: []string{a.Config.PublicURL}, Log: a.Log})
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	a.Guard = &httpapi.Guard{
		Auth:       a.Identity,
		Limiter:    ratelimit.New(a.Store, "requests", a.Config.RateLimit, time.Minute, nil),
		CookieName: a.Config.SessionCookie,
	}
	return nil
}

func (a *App) authGroup() httpapi.Group {
	return certctrl.AuthGroup(certctrl.AuthDeps{
		Identity: a.Identity, DeviceTokens: a.DeviceTokens, Passkeys: a.Passkeys, Guard: a.Guard,
		Cookies: certctrl.Sessions{CookieName: a.Config.SessionCookie, Secure: strings.HasPrefix(a.Config.PublicURL, "https://")},
	})
}

// newMailer picks the mail adapter: SMTP when a host is configured, else
// the outbox folder (local) or a sender that explains mail is off (Lambda).
func newMailer(cfg config.Config, a *App, password string) (mail.Sender, error) {
	if cfg.SMTP.Host == "" {
		if cfg.Shape == config.Local {
			return outbox.New(filepath.Join(cfg.DataDir, "outbox"), a.Log)
		}
		return noMail{}, nil
	}
	mode := smtp.STARTTLS
	switch cfg.SMTP.Port {
	case 465:
		mode = smtp.ImplicitTLS
	case 25:
		mode = smtp.Plain
	}
	return smtp.New(smtp.Config{Host: cfg.SMTP.Host, Port: cfg.SMTP.Port, Username: cfg.SMTP.Username,
		Password: password, From: cfg.SMTP.From, TLS: mode})
}

// noMail is the mailer of a cloud deployment without an SMTP server.
type noMail struct{}

func (noMail) Send(context.Context, mail.Message) error {
	return errors.New("mail is not configured: set the SmtpHost parameter of the stack")
}
