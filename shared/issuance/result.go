package issuance

// The worker's internal API: challenge answers served on its behalf and
// an issue's result uploaded by it (seed 000's internal worker routes).

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Result is an issue's outcome as a worker reports it.
type Result struct {
	// Status is StatusIssued or StatusFailed.
	Status string
	// ChainPEM is the issued chain, leaf first (StatusIssued).
	ChainPEM string
	// Error is why the issue failed (StatusFailed).
	Error string
}

// MaxChainPEM bounds an uploaded chain.
const MaxChainPEM = 64 << 10

// RecordResult ends a pending issue with the worker's result: an issued
// chain must carry the issue's own key (sent in its CSR) and every name;
// it is recorded exactly as a downloaded one. Reporting the outcome an
// issue already has answers it unchanged. Errors: NotFound; Invalid for
// a malformed result or a chain that does not fit the issue; Conflict
// for an issue that ended otherwise or has no key yet.
func (s *Service) RecordResult(ctx context.Context, userID, certID, issueID int64, res Result) (Issue, error) {
	switch {
	case res.Status == StatusIssued && (res.ChainPEM == "" || len(res.ChainPEM) > MaxChainPEM):
		return Issue{}, apperr.InvalidField("certificate_pem", "must be the issued PEM chain, leaf first, at most %d bytes", MaxChainPEM)
	case res.Status == StatusFailed && (strings.TrimSpace(res.Error) == "" || len(res.Error) > 2000):
		return Issue{}, apperr.InvalidField("error", "must say why the issue failed, in at most 2000 characters")
	case res.Status != StatusIssued && res.Status != StatusFailed:
		return Issue{}, apperr.InvalidField("status", "must be %q or %q", StatusIssued, StatusFailed)
	}
	rec, it, err := s.load(ctx, userID, certID, issueID)
	if err != nil {
		return Issue{}, err
	}
	if rec.Status != StatusPending {
		if rec.Status == res.Status && (res.Status == StatusFailed || rec.ChainPEM == res.ChainPEM) {
			return rec.Issue, nil
		}
		return Issue{}, apperr.New(apperr.Conflict, "issue %d has already ended: %s", issueID, rec.Status)
	}
	r := &run{rec: rec, it: it}
	r.rec.Seq++ // any step message in flight now finds the issue past it
	r.rec.UpdatedAt = s.now()
	if res.Status == StatusFailed {
		return r.rec.Issue, s.fail(ctx, r, "reported by the worker: "+res.Error)
	}
	if rec.SealedKey == nil {
		return Issue{}, apperr.New(apperr.Conflict, "issue %d has no key yet: its CSR was never sent", issueID)
	}
	if err := s.complete(ctx, r, []byte(res.ChainPEM), nil); err != nil {
		if msg, ok := problemDetail(err); ok {
			return Issue{}, apperr.InvalidField("certificate_pem", "%s", strings.Replace(msg, "the CA served", "the result holds", 1))
		}
		return Issue{}, err
	}
	r.rec.Step = StepDone
	if err := s.persist(ctx, r); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return Issue{}, apperr.New(apperr.Conflict, "issue %d changed meanwhile; try again", issueID)
		}
		return Issue{}, err
	}
	s.cleanup(ctx, r.rec)
	return r.rec.Issue, nil
}

var (
	tokenPattern   = regexp.MustCompile(`^[A-Za-z0-9_-]{16,256}$`)
	keyAuthPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{16,256}\.[A-Za-z0-9_-]{43}$`)
	domainPattern  = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ServeAnswer makes an HTTP-01 (token) or TLS-ALPN-01 (domain) answer
// visible to the CA through certfleet's responders until it expires or is
// withdrawn. Errors: Invalid naming the bad field, or for another method.
func (s *Service) ServeAnswer(ctx context.Context, method string, p Presentation) error {
	if err := checkAnswer(method, p, true); err != nil {
		return err
	}
	return s.solvers[method].Present(ctx, p)
}

// WithdrawAnswer removes an answer ServeAnswer served; a TLS-ALPN-01
// answer with a KeyAuth is removed only while it is still that one.
func (s *Service) WithdrawAnswer(ctx context.Context, method string, p Presentation) error {
	if err := checkAnswer(method, p, false); err != nil {
		return err
	}
	if method == MethodTLSALPN01 && p.KeyAuth == "" {
		return s.st.Delete(ctx, tlsALPNKey(p.Domain), store.Always)
	}
	return s.solvers[method].CleanUp(ctx, p)
}

func checkAnswer(method string, p Presentation, present bool) error {
	switch method {
	case MethodHTTP01:
		if !tokenPattern.MatchString(p.Token) {
			return apperr.InvalidField("token", "must be an ACME challenge token (base64url, 16 to 256 characters)")
		}
		if present && (!keyAuthPattern.MatchString(p.KeyAuth) || !strings.HasPrefix(p.KeyAuth, p.Token+".")) {
			return apperr.InvalidField("key_authorization", "must be the token's key authorization: <token>.<account key thumbprint>")
		}
	case MethodTLSALPN01:
		if len(p.Domain) > 253 || !domainPattern.MatchString(p.Domain) {
			return apperr.InvalidField("domain", "must be a lower-case DNS name in ASCII (IDNA) form")
		}
		if (present || p.KeyAuth != "") && !keyAuthPattern.MatchString(p.KeyAuth) {
			return apperr.InvalidField("key_authorization", "must be a key authorization: <token>.<account key thumbprint>")
		}
	default:
		return apperr.New(apperr.Invalid, "certfleet serves only http-01 and tls-alpn-01 answers")
	}
	return nil
}

// problemDetail is the detail of a *acmeacct.Problem in err's chain.
func problemDetail(err error) (string, bool) {
	var prob *acmeacct.Problem
	if errors.As(err, &prob) {
		return prob.Detail, true
	}
	return "", false
}
