package issuance

// The step machine's records and its API side: Start, Get, History and the
// HTTP-01 key authorizations the challenge responder serves.
//
// Store layout (table Table):
//
//	user#<user>  cert#<019d cert>#issue#<019d issue>  an issue (issueRecord)
//	user#<user>  cert#<019d cert>#active               the active issue's id
//	http01#<token>  http01                             an HTTP-01 answer, expiring
//	tlsalpn01#<name>  tlsalpn01                        a TLS-ALPN-01 answer, expiring
//	user#<user>  event#...                             the user's event log (package events)
//
// The issue id counter is meta/counter/issues.

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/renewal"
	"github.com/certfleet/certfleet/shared/store"
)

// Tables the service keeps its records in.
const (
	Table        = "issuance"
	CounterTable = "meta"
)

// Issue statuses.
const (
	StatusPending = "pending"
	StatusIssued  = "issued"
	StatusFailed  = "failed"
)

// Steps of the machine; each is the message kind "issuance.<step>".
const (
	StepOrder = "order"
	// StepAuthorize reads the authorizations and presents every answer.
	StepAuthorize = "authorize"
	// StepCheck waits until every answer is visible (DNS propagation).
	StepCheck = "check"
	// StepAccept asks the CA to validate the answers.
	StepAccept   = "accept"
	StepPoll     = "poll"
	StepFinalize = "finalize"
	StepDownload = "download"
	StepCleanup  = "cleanup"
	StepDone     = "done"
)

// Kinds are the queue message kinds of the steps, to register with the
// worker (all with Service.Step).
var Kinds = []string{
	KindPrefix + StepOrder, KindPrefix + StepAuthorize, KindPrefix + StepCheck, KindPrefix + StepAccept, KindPrefix + StepPoll,
	KindPrefix + StepFinalize, KindPrefix + StepDownload, KindPrefix + StepCleanup,
}

// KindPrefix prefixes every step's message kind.
const KindPrefix = "issuance."

// Key algorithms a CertSpec names (as package certs spells them).
const (
	KeyECDSA = "ECDSA"
	KeyRSA   = "RSA"
)

// AccountSource gives the registered ACME account a certificate orders
// with. Errors: an apperr NotFound for an unknown account, an apperr
// Conflict for one that is not active (pending, disabled or failed); other
// errors are transient.
type AccountSource interface {
	Account(ctx context.Context, userID, acctID int64) (Account, error)
}

// AccountFrom builds the port's Account from what an ACME account record
// holds: the provider's directory URL, the account URL and the opened key.
// It is what acmeacct's Signer method returns through.
func AccountFrom(directoryURL, accountURL string, key crypto.Signer) (Account, error) {
	if directoryURL == "" || accountURL == "" || key == nil {
		return Account{}, apperr.New(apperr.Conflict, "the ACME account is not registered")
	}
	return Account{DirectoryURL: directoryURL, URL: accountURL, Key: key}, nil
}

// CertSpec is what an issue copies from its certificate record.
type CertSpec struct {
	Names        []string
	KeyAlgorithm string // KeyECDSA or KeyRSA
	KeySize      int    // curve size (256, 384) or RSA bits
	AcctID       int64
	// ValidationMethod is one of the Method* constants.
	ValidationMethod string
	// DNSProviderID is the user's DNS provider of dns-01-provider.
	DNSProviderID int64
	// ServerDecryptExport allows exporting the decrypted key.
	ServerDecryptExport bool
	// IssueID is the issue of the current certificate, 0 before the first.
	IssueID int64
	// Revoked says the current certificate was revoked: it is not renewed.
	Revoked bool
	// Provider is the ACME account's CA provider ("letsencrypt", ...):
	// Config.Budgets may bound what it is asked for.
	Provider string
}

// Issued is what an issue tells its certificate record once issued.
type Issued struct {
	IssueID   int64
	NotBefore time.Time
	NotAfter  time.Time
	// RenewAt is the planned renewal (renewal.Plan: in the CA's ARI
	// window, else at 2/3 of the lifetime).
	RenewAt time.Time
	// CheckAt is when the renewal scan should look at it next: RenewAt,
	// or earlier to ask the CA's ARI window again (ARICheckEvery).
	CheckAt time.Time
}

// CertSource reads certificate records and records issues on them
// (certs.Service). Spec errors: an apperr NotFound for another user's or a
// missing certificate. RecordIssued must be idempotent (the download step
// may call it again with the same values); its errors are transient.
type CertSource interface {
	Spec(ctx context.Context, userID, certID int64) (CertSpec, error)
	RecordIssued(ctx context.Context, userID, certID int64, is Issued) error
	// RecordRevoked marks the certificate revoked: it stops renewing.
	RecordRevoked(ctx context.Context, userID, certID int64) error
	// PlanRenewal records when the certificate is planned to renew and
	// when the renewal scan should next look at it (at or before then).
	PlanRenewal(ctx context.Context, userID, certID int64, renewAt, checkAt time.Time) error
}

// Config tunes the service.
type Config struct {
	// MaxAttempts is the delivery after which a transient failure marks
	// the issue failed; it should match the queue's maxReceiveCount.
	// 0 means 5.
	MaxAttempts int
	// PollMin and PollMax bound the poll backoff used when the CA sends
	// no Retry-After: PollMin, doubling, at most PollMax. 0 means 5 ms
	// and 2 s.
	PollMin, PollMax time.Duration
	// MaxPolls is how many polls one issue may make before it fails;
	// 0 means 200.
	MaxPolls int
	// ChallengeTTL is how long an HTTP-01 or TLS-ALPN-01 answer is
	// served; 0 means 1 hour.
	ChallengeTTL time.Duration
	// Solvers answer the validation methods beyond the built-in http-01
	// and tls-alpn-01 (which the store holds for the responders), by
	// method: the DNS-01 solvers of package dns01.
	Solvers map[string]Solver
	// CheckMin and CheckMax bound the wait between two looks at answers
	// that are not visible yet (DNS propagation): CheckMin, doubling, at
	// most CheckMax. 0 means 1 s and 30 s.
	CheckMin, CheckMax time.Duration
	// MaxChecks is how many looks an issue takes before it fails; 0
	// means 40 (about 15 minutes with the default bounds).
	MaxChecks int
	// MaxInFlightPerCA bounds the requests this process sends to one CA
	// at once; 0 means no bound.
	MaxInFlightPerCA int
	// OnIssued, when set, is called once an issue is stored issued (a
	// renewal included), e.g. to wrap the new key for the certificate's
	// devices. It must not fail the issue: it logs its own errors.
	OnIssued func(ctx context.Context, userID, certID, issueID int64)
	// Budgets bound how many certificates each CA provider (by name) is
	// asked for per week (Let's Encrypt's limits for "letsencrypt"); a
	// Start over budget is an apperr RateLimit saying when it frees up.
	Budgets map[string]*renewal.Budget
	// PreferredChain is the top issuer CN of the chain to download, or "".
	PreferredChain string
	// Inline runs a step that needs no wait in the same delivery as the
	// step before it instead of queueing it. Default on (NoInline off).
	NoInline bool
	Now      func() time.Time
	Log      *slog.Logger
}

// Service is the issuance step machine. Safe for concurrent use.
type Service struct {
	st       store.Store
	sealer   keys.Sealer
	q        queue.Sender
	ca       ACME
	accounts AccountSource
	certs    CertSource
	cfg      Config
	log      *slog.Logger
	solvers  map[string]Solver
}

// New returns the service.
func New(st store.Store, sealer keys.Sealer, q queue.Sender, ca ACME, accounts AccountSource, certs CertSource, cfg Config) *Service {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 5 * time.Millisecond
	}
	if cfg.PollMax <= 0 {
		cfg.PollMax = 2 * time.Second
	}
	if cfg.MaxPolls <= 0 {
		cfg.MaxPolls = 200
	}
	if cfg.ChallengeTTL <= 0 {
		cfg.ChallengeTTL = time.Hour
	}
	if cfg.CheckMin <= 0 {
		cfg.CheckMin = time.Second
	}
	if cfg.CheckMax <= 0 {
		cfg.CheckMax = 30 * time.Second
	}
	if cfg.MaxChecks <= 0 {
		cfg.MaxChecks = 40
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxInFlightPerCA > 0 {
		ca = newBoundedCA(ca, cfg.MaxInFlightPerCA)
	}
	s := &Service{st: st, sealer: sealer, q: q, ca: ca, accounts: accounts, certs: certs, cfg: cfg, log: cfg.Log}
	s.solvers = map[string]Solver{MethodHTTP01: httpSolver{s}, MethodTLSALPN01: tlsALPNSolver{s}}
	maps.Copy(s.solvers, cfg.Solvers)
	return s
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// Issue is one attempt to issue a certificate, as its owner sees it.
type Issue struct {
	ID           int64    `json:"id"`
	UserID       int64    `json:"user_id"`
	CertID       int64    `json:"certificate_id"`
	AcctID       int64    `json:"acct_id"`
	Names        []string `json:"names"`
	KeyAlgorithm string   `json:"key_algorithm"`
	KeySize      int      `json:"key_size"`
	Status       string   `json:"status"`
	// Method is the validation method the names are proven with.
	Method string `json:"validation_method"`
	// Renews is the issue of the certificate this one replaces, 0 for a
	// first issue.
	Renews int64 `json:"renews,omitempty"`
	// Replaces is the ARI certificate id (RFC 9773) of that certificate,
	// sent as the order's "replaces" when the CA offers ARI.
	Replaces string `json:"replaces,omitempty"`
	// Step is the step the issue is at (Step* constants).
	Step     string `json:"step"`
	OrderURL string `json:"order_url,omitempty"`
	// Error is why the issue failed.
	Error string `json:"error,omitempty"`
	// ChainPEM is the issued chain, leaf first.
	ChainPEM  string    `json:"chain_pem,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	RenewAt   time.Time `json:"renew_at,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// issueRecord is the stored issue with the machine's state.
type issueRecord struct {
	Issue
	// Seq counts the issue's transitions; a message acts only when it
	// carries the current one, so replays and stale polls do nothing.
	Seq            int64    `json:"seq"`
	FinalizeURL    string   `json:"finalize_url,omitempty"`
	CertificateURL string   `json:"certificate_url,omitempty"`
	Authorizations []string `json:"authorizations,omitempty"`
	// Answers are the challenge answers presented, for the check, accept
	// and cleanup steps.
	Answers []answer `json:"answers,omitempty"`
	// Checks counts the looks at answers that were not visible yet.
	Checks int `json:"checks,omitempty"`
	// DNSProviderID is the certificate's DNS provider (dns-01-provider).
	DNSProviderID int64 `json:"dns_provider_id,omitempty"`
	// Reservation is what the issue counts against its CA's budget,
	// given back if it fails.
	Reservation renewal.Reservation `json:"reservation,omitzero"`
	// Provider is the CA provider whose budget holds the reservation.
	Provider string `json:"provider,omitempty"`
	// Finalized is set once the CSR was accepted: polls then wait for
	// the certificate.
	Finalized bool `json:"finalized,omitempty"`
	Polls     int  `json:"polls,omitempty"`
	// OrderClaimedAt is when a delivery claimed the order step (see
	// claimOrder).
	OrderClaimedAt time.Time `json:"order_claimed_at,omitzero"`
	// SealedKey is the certificate's private key (PKCS #8), sealed; made
	// once, before the CSR is sent.
	SealedKey []byte `json:"sealed_key,omitempty"`
}

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }
func issuePrefix(certID int64) string {
	return fmt.Sprintf("cert#%019d#issue#", certID)
}
func issueKey(userID, certID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: issuePrefix(certID) + fmt.Sprintf("%019d", id)}
}
func activeKey(userID, certID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("cert#%019d#active", certID)}
}
func tokenKey(token string) store.Key {
	return store.Key{Table: Table, PK: "http01#" + token, SK: "http01"}
}
func tlsALPNKey(domain string) store.Key {
	return store.Key{Table: Table, PK: "tlsalpn01#" + domain, SK: "tlsalpn01"}
}

func sealContext(userID, issueID int64) map[string]string {
	return map[string]string{"issue": strconv.FormatInt(issueID, 10), "user": strconv.FormatInt(userID, 10), "purpose": "certificate-key"}
}

// message is the body of every step message.
type message struct {
	UserID  int64 `json:"user_id"`
	CertID  int64 `json:"certificate_id"`
	IssueID int64 `json:"issue_id"`
	Seq     int64 `json:"seq"`
}

// Start begins issuing the certificate (renewing it when it was issued
// before), or returns its active issue (queueing its step again when it
// is stale, see StaleAfter). Errors: NotFound for an unknown
// certificate; Invalid for a certificate without names.
func (s *Service) Start(ctx context.Context, userID, certID int64) (Issue, error) {
	if is, ok, err := s.active(ctx, userID, certID); err != nil || ok {
		return is, err
	}
	spec, err := s.certs.Spec(ctx, userID, certID)
	if err != nil {
		return Issue{}, err
	}
	method := spec.ValidationMethod
	if method == "" {
		method = MethodHTTP01
	}
	if len(spec.Names) == 0 {
		return Issue{}, apperr.InvalidField("sans", "the certificate has no names")
	}
	var res renewal.Reservation
	if b := s.cfg.Budgets[spec.Provider]; b != nil {
		if res, err = b.Reserve(ctx, spec.Names); err != nil {
			return Issue{}, err
		}
	}
	rec, err := s.create(ctx, userID, certID, spec, method, res)
	if err != nil {
		s.release(context.WithoutCancel(ctx), spec.Provider, res)
	}
	return rec, err
}

// create stores a new issue with the active marker and queues its first
// step.
func (s *Service) create(ctx context.Context, userID, certID int64, spec CertSpec, method string, res renewal.Reservation) (Issue, error) {
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "issues"}, 1, time.Time{})
	if err != nil {
		return Issue{}, fmt.Errorf("issuance: next issue id: %w", err)
	}
	now := s.now()
	rec := issueRecord{Issue: Issue{ID: id, UserID: userID, CertID: certID, AcctID: spec.AcctID, Names: spec.Names,
		KeyAlgorithm: spec.KeyAlgorithm, KeySize: spec.KeySize, Method: method, Renews: spec.IssueID,
		Status: StatusPending, Step: StepOrder, CreatedAt: now, UpdatedAt: now},
		Seq: 1, DNSProviderID: spec.DNSProviderID, Reservation: res, Provider: spec.Provider}
	it, err := store.JSONItem(issueKey(userID, certID, id), rec)
	if err != nil {
		return Issue{}, err
	}
	marker := store.Item{Key: activeKey(userID, certID), Value: []byte(strconv.FormatInt(id, 10))}
	err = s.st.Transact(ctx, []store.Write{store.PutWrite(marker, store.IfAbsent), store.PutWrite(it, store.IfAbsent)})
	if errors.Is(err, store.ErrConditionFailed) {
		// Another request started one first.
		if is, ok, err := s.active(ctx, userID, certID); err != nil || ok {
			return is, err
		}
		return Issue{}, apperr.New(apperr.Conflict, "certificate %d is being issued; try again", certID)
	}
	if err != nil {
		return Issue{}, fmt.Errorf("issuance: start: %w", err)
	}
	if err := s.send(ctx, rec, 0); err != nil {
		undo := []store.Write{store.DeleteWrite(marker.Key, store.Always), store.DeleteWrite(it.Key, store.Always)}
		if uerr := s.st.Transact(context.WithoutCancel(ctx), undo); uerr != nil {
			s.log.Error("issuance: undoing the issue failed", "issue", id, "err", uerr)
		}
		return Issue{}, fmt.Errorf("issuance: queue issue %d: %w", id, err)
	}
	return rec.Issue, nil
}

// active returns the certificate's active issue, if any.
func (s *Service) active(ctx context.Context, userID, certID int64) (Issue, bool, error) {
	m, err := s.st.Get(ctx, activeKey(userID, certID))
	if errors.Is(err, store.ErrNotFound) {
		return Issue{}, false, nil
	}
	if err != nil {
		return Issue{}, false, fmt.Errorf("issuance: read active issue: %w", err)
	}
	id, err := strconv.ParseInt(string(m.Value), 10, 64)
	if err != nil {
		return Issue{}, false, fmt.Errorf("issuance: bad active marker %s", m.Key)
	}
	rec, _, err := s.load(ctx, userID, certID, id)
	if err != nil {
		return Issue{}, false, err
	}
	if rec.Status == StatusPending && s.now().Sub(rec.UpdatedAt) > StaleAfter {
		// No step has moved it for longer than any wait the machine
		// queues: its message was lost (a queue outage after Start, say).
		// Queue its current step again; a copy that still exists finds
		// the issue moved on and does nothing.
		s.log.Warn("issuance: stale issue; its current step is queued again", "issue", rec.ID, "step", rec.Step, "updated", rec.UpdatedAt)
		if err := s.send(ctx, rec, 0); err != nil {
			return Issue{}, false, err
		}
	}
	return rec.Issue, true, nil
}

// StaleAfter is how long a pending issue may go without a step before
// asking for it again (Start, and so the renewal scan) queues its current
// step anew: longer than any delay the machine queues with.
const StaleAfter = 20 * time.Minute

// Get returns one issue of the user's certificate. Errors: NotFound.
func (s *Service) Get(ctx context.Context, userID, certID, issueID int64) (Issue, error) {
	rec, _, err := s.load(ctx, userID, certID, issueID)
	return rec.Issue, err
}

// History returns the certificate's issues, newest first, at most limit
// (0: store.DefaultQueryLimit) per page, and the cursor of the next page.
func (s *Service) History(ctx context.Context, userID, certID int64, limit int, cursor string) ([]Issue, string, error) {
	// Another user's (or no) certificate is NotFound, not an empty history.
	if _, err := s.certs.Spec(ctx, userID, certID); err != nil {
		return nil, "", err
	}
	page, err := s.st.Query(ctx, store.Query{Table: Table, PK: userPK(userID), SKPrefix: issuePrefix(certID),
		Reverse: true, Limit: limit, Cursor: cursor})
	if errors.Is(err, store.ErrInvalid) {
		return nil, "", apperr.InvalidField("cursor", "is not a cursor of this listing")
	}
	if err != nil {
		return nil, "", fmt.Errorf("issuance: history: %w", err)
	}
	out, err := store.DecodeEach(page.Items, func(r issueRecord) Issue { return r.Issue })
	return out, page.Cursor, err
}

func (s *Service) load(ctx context.Context, userID, certID, id int64) (issueRecord, store.Item, error) {
	var rec issueRecord
	it, err := store.GetJSON(ctx, s.st, issueKey(userID, certID, id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, it, apperr.New(apperr.NotFound, "issue %d of certificate %d not found", id, certID)
	}
	if err != nil {
		return rec, it, fmt.Errorf("issuance: read issue %d: %w", id, err)
	}
	return rec, it, nil
}

// TLSALPNKeyAuthorization returns the key authorization a TLS-ALPN-01
// challenge for domain is answered with, for the responder. Errors:
// NotFound for a domain with no answer presented.
func (s *Service) TLSALPNKeyAuthorization(ctx context.Context, domain string) (string, error) {
	if domain == "" || len(domain) > 253 {
		return "", apperr.New(apperr.NotFound, "no challenge for this name")
	}
	it, err := s.st.Get(ctx, tlsALPNKey(domain))
	if errors.Is(err, store.ErrNotFound) {
		return "", apperr.New(apperr.NotFound, "no challenge for this name")
	}
	if err != nil {
		return "", fmt.Errorf("issuance: read tls-alpn-01 answer: %w", err)
	}
	return string(it.Value), nil
}

// KeyAuthorization returns the HTTP-01 key authorization of token, for
// the challenge responder. Errors: NotFound for an unknown or expired
// token.
func (s *Service) KeyAuthorization(ctx context.Context, token string) (string, error) {
	if token == "" || len(token) > 256 {
		return "", apperr.New(apperr.NotFound, "unknown token")
	}
	it, err := s.st.Get(ctx, tokenKey(token))
	if errors.Is(err, store.ErrNotFound) {
		return "", apperr.New(apperr.NotFound, "unknown token")
	}
	if err != nil {
		return "", fmt.Errorf("issuance: read token: %w", err)
	}
	return string(it.Value), nil
}

// SealedKey returns the issue's sealed private key (PKCS #8) and the
// context it is sealed under, for export; nil before finalize.
func (s *Service) SealedKey(ctx context.Context, userID, certID, issueID int64) ([]byte, map[string]string, error) {
	rec, _, err := s.load(ctx, userID, certID, issueID)
	if err != nil {
		return nil, nil, err
	}
	return rec.SealedKey, sealContext(userID, issueID), nil
}
