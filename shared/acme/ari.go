package acme

// ACME Renewal Information (RFC 9773): the renewalInfo GET of the issuance
// port, through lego's CertificateService.GetRenewalInfo (a plain GET of
// <renewalInfo>/<certID> with the Core's HTTP client, so over the call's
// transport and bound to its context).

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/issuance"
	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
)

// maxRenewalInfoSize bounds the renewalInfo document read.
const maxRenewalInfoSize = 64 << 10

// RenewalInfo fetches the suggested renewal window of the certificate
// leafDER from the CA of acct (see issuance.ACME.RenewalInfo for the
// errors). The certificate id is issuance.ARICertID of the leaf, computed
// here; the CA is asked even about a certificate it did not issue (it
// answers 404, a *acmeacct.Problem).
func (c *Client) RenewalInfo(ctx context.Context, acct issuance.Account, leafDER []byte) (issuance.RenewalInfo, error) {
	if len(leafDER) == 0 {
		return issuance.RenewalInfo{}, &acmeacct.Problem{Type: problemMalformed, Detail: "no certificate to ask renewal information about"}
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return issuance.RenewalInfo{}, &acmeacct.Problem{Type: problemMalformed, Detail: fmt.Sprintf("renewal information: the certificate cannot be parsed: %v", err)}
	}
	certID, err := issuance.ARICertID(leaf)
	if err != nil {
		return issuance.RenewalInfo{}, &acmeacct.Problem{Type: problemMalformed, Detail: err.Error()}
	}
	cl, err := c.begin(ctx, acct, "renewal info")
	if err != nil {
		return issuance.RenewalInfo{}, err
	}
	defer cl.end()
	resp, err := cl.core.Certificates.GetRenewalInfo(certID)
	if errors.Is(err, api.ErrNoARI) {
		return issuance.RenewalInfo{}, issuance.ErrNoRenewalInfo
	}
	if err != nil {
		return issuance.RenewalInfo{}, classify(cl.ctx, cl.op, err)
	}
	// The body is closed by cl.end (the transport keeps it).
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRenewalInfoSize+1))
	if err != nil {
		return issuance.RenewalInfo{}, classify(cl.ctx, cl.op, fmt.Errorf("read %s: %w", resp.Request.URL, err))
	}
	if resp.StatusCode != http.StatusOK {
		return issuance.RenewalInfo{}, renewalInfoRefused(resp, body)
	}
	if len(body) > maxRenewalInfoSize {
		return issuance.RenewalInfo{}, fmt.Errorf("acme: renewal info %s: larger than %d bytes", resp.Request.URL, maxRenewalInfoSize)
	}
	var ri legoacme.RenewalInfoResponse
	if err := json.Unmarshal(body, &ri); err != nil {
		return issuance.RenewalInfo{}, fmt.Errorf("acme: renewal info %s: not a RenewalInfo object: %w", resp.Request.URL, err)
	}
	w := ri.SuggestedWindow
	// RFC 9773 §4.2: a window whose end is not after its start is
	// invalid, and the client treats it as no answer at all.
	if w.Start.IsZero() || w.End.IsZero() || !w.Start.Before(w.End) {
		return issuance.RenewalInfo{}, fmt.Errorf("acme: renewal info %s: invalid suggested window %s to %s",
			resp.Request.URL, w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
	}
	return issuance.RenewalInfo{
		Start:          w.Start.UTC(),
		End:            w.End.UTC(),
		ExplanationURL: ri.ExplanationURL,
		RetryAfter:     parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}, nil
}

// renewalInfoRefused classifies a renewalInfo answer other than 200 by the
// port's rule: a 4xx answer (but 408 and 429) is a *acmeacct.Problem, of
// type about:blank when it carries no problem document; the rest is a
// plain error.
func renewalInfoRefused(resp *http.Response, body []byte) error {
	var prob legoacme.ProblemDetails
	hasDoc := json.Unmarshal(body, &prob) == nil && prob.Type != ""
	st := resp.StatusCode
	if st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests {
		if !hasDoc {
			return &acmeacct.Problem{Type: problemBlank, Detail: fmt.Sprintf("GET %s: %s without a problem document", resp.Request.URL, resp.Status), Status: st}
		}
		prob.HTTPStatus = st
		return problemOf(&prob)
	}
	if hasDoc {
		return fmt.Errorf("acme: renewal info %s: %s: %s: %s", resp.Request.URL, resp.Status, prob.Type, prob.Detail)
	}
	return fmt.Errorf("acme: renewal info %s: %s", resp.Request.URL, resp.Status)
}
