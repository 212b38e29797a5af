package pebbletest

// ACME Renewal Information (RFC 9773) control. Pebble v2.10.1 answers
// GET <renewalInfo>/<certID> (its directory's renewalInfo is
// /draft-ietf-acme-ari-03/renewalInfo) with a window around 2/3 of the
// certificate's lifetime, or one already past for a revoked certificate,
// and Retry-After: 21600. Its management interface overrides that answer
// per certificate: POST /set-renewal-info/ with the JSON
// {"Certificate": "<PEM>", "ARIResponse": "<body>"}; Pebble finds the
// certificate by the PEM's serial and from then on serves the body
// verbatim (unchecked, so it may be malformed on purpose) with the same
// Retry-After. No environment variable or flag is involved.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// SetRenewalWindow makes Pebble's renewalInfo answer for the certificate
// whose PEM starts certPEM (a chain's leaf is enough) the suggested window
// start to end, with explanationURL when not "". It fails the test when
// Pebble refuses (404: a certificate Pebble did not issue).
func (p *Pebble) SetRenewalWindow(tb testing.TB, certPEM []byte, start, end time.Time, explanationURL string) {
	tb.Helper()
	type window struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	}
	doc := struct {
		SuggestedWindow window `json:"suggestedWindow"`
		ExplanationURL  string `json:"explanationURL,omitempty"`
	}{window{start.UTC(), end.UTC()}, explanationURL}
	raw, err := json.Marshal(doc)
	if err != nil {
		tb.Fatalf("pebbletest: %v", err)
	}
	p.SetRenewalInfo(tb, certPEM, string(raw))
}

// SetRenewalInfo makes Pebble answer renewalInfo for the certificate
// whose PEM starts certPEM with body, verbatim: anything, even no JSON.
func (p *Pebble) SetRenewalInfo(tb testing.TB, certPEM []byte, body string) {
	tb.Helper()
	reqBody, err := json.Marshal(struct {
		Certificate string
		ARIResponse string
	}{string(certPEM), body})
	if err != nil {
		tb.Fatalf("pebbletest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ManagementURL+"/set-renewal-info/", bytes.NewReader(reqBody))
	if err != nil {
		tb.Fatalf("pebbletest: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		tb.Fatalf("pebbletest: POST /set-renewal-info/: %v", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("pebbletest: POST /set-renewal-info/: %s: %s", resp.Status, answer)
	}
}
