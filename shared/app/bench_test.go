package app_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/config"
)

// issueOverHTTP creates a certificate for name over the local server's
// API, starts its issue and waits, polling every millisecond, until the
// issue is issued; it returns the time from the issue request to the
// certificate being downloadable (in GET .../issues).
func issueOverHTTP(b *testing.B, s *liveServer, acctID int64, name string) time.Duration {
	var cert struct{ ID int64 }
	if code := s.call("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":%q,"acct_id":%d}`, name, acctID), &cert); code != 201 {
		b.Fatalf("create %s: %d", name, code)
	}
	start := time.Now()
	if code := s.call("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", cert.ID), "", nil); code != 202 {
		b.Fatalf("start %s: %d", name, code)
	}
	for deadline := start.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var issues []struct {
			Status, Error string
			Chain         string `json:"certificate_pem"`
		}
		s.call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", cert.ID), "", &issues)
		if len(issues) > 0 && issues[0].Status == "issued" && strings.Contains(issues[0].Chain, "CERTIFICATE") {
			return time.Since(start)
		}
		if len(issues) > 0 && issues[0].Status == "failed" {
			b.Fatalf("%s failed: %s", name, issues[0].Error)
		}
	}
	b.Fatalf("%s not issued in 60 s", name)
	return 0
}

// benchServer starts the local server against Pebble with an active ACME
// account, for the issuance benchmarks.
func benchServer(b *testing.B) (*liveServer, int64) {
	s := startLiveServer(b, config.Local)
	b.Cleanup(s.stop)
	var acct struct {
		ID     int64
		Status string
	}
	if code := s.call("POST", "/apiv1/me/acme-accounts", `{"provider_name":"letsencrypt","email":"bench@example.com"}`, &acct); code != 201 {
		b.Fatalf("create account: %d", code)
	}
	s.waitFor("the account to register", func() bool {
		s.call("GET", fmt.Sprintf("/apiv1/me/acme-accounts/%d", acct.ID), "", &acct)
		return acct.Status == "active"
	})
	return s, acct.ID
}

// BenchmarkServerIssueOne is the issue's speed target in the local shape
// (certfleet serve over bbolt, Pebble with PEBBLE_VA_NOSLEEP=1 validating
// HTTP-01 against the server itself): from POST .../issues to the
// certificate in GET .../issues, one at a time, a new name each; it
// reports the median (run with -benchtime 20x).
func BenchmarkServerIssueOne(b *testing.B) {
	s, acct := benchServer(b)
	issueOverHTTP(b, s, acct, "warm.bench.test")
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		times = append(times, issueOverHTTP(b, s, acct, fmt.Sprintf("one-%d-%d.bench.test", b.N, i)))
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "ms-max")
}

// BenchmarkServerIssueHundred creates 100 certificates, requests their
// issues at once over the API and reports the wall time until every one
// is issued (one listing polled every 10 ms; then every chain is checked
// downloadable, untimed). Each name is its own registered domain, so Let's
// Encrypt's weekly budget (which the letsencrypt provider, here Pebble,
// is held to) does not refuse them.
func BenchmarkServerIssueHundred(b *testing.B) {
	s, acct := benchServer(b)
	for n := range b.N {
		ids := make([]int64, 100)
		for i := range ids {
			var cert struct{ ID int64 }
			if code := s.call("POST", "/apiv1/me/certificates", fmt.Sprintf(`{"domain_name":"h%d-%d-%d.test","acct_id":%d}`, b.N, n, i, acct), &cert); code != 201 {
				b.Fatalf("create: %d", code)
			}
			ids[i] = cert.ID
		}
		start := time.Now()
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				if code := s.call("POST", fmt.Sprintf("/apiv1/me/certificates/%d/issues", id), "", nil); code != 202 {
					b.Errorf("start: %d", code)
				}
			})
		}
		wg.Wait()
		s.waitFor("100 certificates", func() bool {
			var list []struct {
				ID     int64
				Status string
			}
			s.call("GET", "/apiv1/me/certificates?limit=1000", "", &list)
			issued := 0
			for _, c := range list {
				if slices.Contains(ids, c.ID) && c.Status == "issued" {
					issued++
				}
			}
			time.Sleep(10 * time.Millisecond)
			return issued == len(ids)
		})
		b.ReportMetric(time.Since(start).Seconds(), "s-for-100")
		for _, id := range ids {
			var issues []struct {
				Status string
				Chain  string `json:"certificate_pem"`
			}
			s.call("GET", fmt.Sprintf("/apiv1/me/certificates/%d/issues", id), "", &issues)
			if len(issues) == 0 || issues[0].Status != "issued" || !strings.Contains(issues[0].Chain, "CERTIFICATE") {
				b.Fatalf("certificate %d: %+v", id, issues)
			}
		}
	}
}
