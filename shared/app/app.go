// Package app wires adapters to services: the only package that knows both
// shapes. Local builds the embedded shape (bbolt, the local queue, a master
// key file); Lambda builds the AWS shape (DynamoDB, SQS, KMS). Everything
// above it (route groups, step handlers, jobs) is the same for both.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/dnsprov"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/identity/passkey"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/schedule"
	"github.com/certfleet/certfleet/shared/store"
	"github.com/certfleet/certfleet/shared/worker"
)

// Version is set at build time with -ldflags "-X .../shared/app.Version=...".
var Version = "dev"

// IssuanceQueue names the local queue that plays the SQS issuance queue.
const IssuanceQueue = "issuance"

// App is one wired instance of certfleet.
type App struct {
	Config config.Config
	Log    *slog.Logger
	Store  store.Store
	// Queue is the issuance queue.
	Queue  queue.Queue
	Sealer keys.Sealer
	// Steps maps message kinds to the step handlers the worker runs.
	Steps *worker.Registry
	// Identity is users, sessions and API keys; Guard authenticates and
	// authorizes every user-scoped route with it.
	Identity *identity.Service
	Guard    *httpapi.Guard
	// DeviceTokens issues and verifies device agents' JWTs.
	DeviceTokens *devicetoken.Service
	// Passkeys is WebAuthn registration, login and step-up.
	Passkeys *passkey.Service
	// ACME is ACME accounts and CA providers.
	ACME *acmeacct.Service
	// Certs is certificate records; Issuance issues them (the step machine).
	Certs    *certs.Service
	Issuance *issuance.Service
	// Devices is the device registry; DeviceGrant onboards devices.
	Devices     *devices.Service
	DeviceGrant *devices.Grant
	// DNSProviders is users' DNS provider credentials, which
	// dns-01-provider certificates name.
	DNSProviders *dnsprov.Service
	// Stream is the devices' update signal stream; InstallConfigs their
	// install configs and reported agent versions.
	Stream         *devices.Stream
	InstallConfigs *devices.InstallConfigs
	// CAs is users' private CAs, which devices trust (CAAssociations).
	CAs *cas.Service
	// ca is the ACME CA adapter the services share.
	ca *acme.Client

	closers []func() error
	// purgeExpired reclaims expired items; only the embedded store needs
	// it (DynamoDB's TTL deletes them itself).
	purgeExpired func(context.Context, time.Time) (int, error)
}

// Close releases what the app opened, in reverse order.
func (a *App) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	a.closers = nil
	return first
}

// wireServices builds the domain services both shapes share, over the
// adapters already in a.
func (a *App) wireServices(m mail.Sender, o options) error {
	if err := a.wireIdentity(m); err != nil {
		return err
	}
	if err := a.wireACME(); err != nil {
		return err
	}
	a.wireCerts()
	a.wireDevices()
	a.wireCAs()
	return a.wireIssuance(o)
}

// Groups is every route group, in mount order.
func (a *App) Groups() []httpapi.Group {
	return []httpapi.Group{a.healthGroup(), a.authGroup(), a.acmeAccountsGroup(), a.acmeAPIGroup(), a.certificatesGroup(),
		a.issuesGroup(), a.challengeGroup(), a.devicesGroup(), a.deviceSelfGroup(), a.casGroup()}
}

// Handler serves every route group on one router (the local shape).
func (a *App) Handler() http.Handler { return a.handler(a.Groups()...) }

// handler serves the groups behind the shared middleware.
func (a *App) handler(groups ...httpapi.Group) http.Handler {
	return httpapi.Wrap(httpapi.NewRouter(groups...), a.Log)
}

// HealthHandler serves the health route group alone (its Lambda function).
func (a *App) HealthHandler() http.Handler { return a.handler(a.healthGroup()) }

// AuthHandler serves the auth route group alone (its Lambda function).
func (a *App) AuthHandler() http.Handler { return a.handler(a.authGroup()) }

func (a *App) healthGroup() httpapi.Group {
	return httpapi.HealthGroup(Version, map[string]httpapi.Check{
		"store": a.Store.Ping,
		"queue": a.Queue.Ping,
	})
}

// Intervals of the local scheduler's jobs.
const (
	DeadLetterWatchInterval = 5 * time.Minute
	PurgeExpiredInterval    = 10 * time.Minute
	RenewalScanInterval     = 5 * time.Minute
)

// Jobs is every periodic job. In the cloud shape the worker consumes the
// dead-letter queue (WorkerLambda) and DynamoDB's TTL purges.
func (a *App) Jobs() []schedule.Job {
	jobs := []schedule.Job{{Name: "renewal-scan", Every: RenewalScanInterval, Run: a.ScanRenewals}, {
		Name:  "dead-letter-watch",
		Every: DeadLetterWatchInterval,
		Run: func(ctx context.Context) error {
			dead, err := a.Queue.ListDead(ctx, queue.MaxReceiveBatch)
			if err != nil {
				return fmt.Errorf("list dead letters: %w", err)
			}
			if len(dead) > 0 {
				a.Log.Warn("issuance messages in the dead-letter list; their issues are marked failed; inspect and redrive them",
					"count_at_least", len(dead), "first_kind", dead[0].Kind, "first_id", dead[0].ID)
			}
			for _, m := range dead {
				if err := a.abandon(ctx, queue.Delivery{Message: m, Attempt: a.Config.QueueMaxReceives}); err != nil {
					return err
				}
			}
			return nil
		},
	}}
	if a.purgeExpired != nil {
		jobs = append(jobs, schedule.Job{
			Name:  "purge-expired",
			Every: PurgeExpiredInterval,
			Run: func(ctx context.Context) error {
				n, err := a.purgeExpired(ctx, time.Now())
				if n > 0 {
					a.Log.Debug("purged expired items", "count", n)
				}
				return err
			},
		})
	}
	return jobs
}

func newLogger(cfg config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// abandon handles a dead issuance message: its issue is marked failed.
// Other dead messages (registration, renewal checks) only stay listed.
func (a *App) abandon(ctx context.Context, d queue.Delivery) error {
	if !strings.HasPrefix(d.Kind, issuance.KindPrefix) {
		return nil
	}
	return a.Issuance.Abandon(ctx, d)
}
