package certctrl_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/issuance"
	"github.com/certfleet/certfleet/shared/issuance/records"
	"github.com/certfleet/certfleet/shared/worker"
)

// issuing is real parts that issue certificates: ACME accounts at Pebble,
// certificate records, the step machine with its HTTP-01 responder on a
// loopback port, and a worker running its steps until the test ends.
type issuing struct {
	p     *testenv.Parts
	accts *acmeacct.Service
	certs *certs.Service
	iss   *issuance.Service
}

func startIssuing(t *testing.T) issuing {
	t.Helper()
	p := testenv.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accts, peb := p.ACMEAccounts(t, pebbletest.Options{HTTPPort: l.Addr().(*net.TCPAddr).Port, DNSServer: pebbletest.StartDNS(t)})
	ca, err := acme.New(acme.Config{RootsPEMFile: peb.RootsPEMFile, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	certSvc := certs.New(p.Store, accts, certs.Config{Now: p.Clock.Now, Log: p.Log})
	iss := issuance.New(p.Store, p.Sealer, p.Queue, ca, records.Accounts{ACME: accts}, records.Certs{Certs: certSvc, ACME: accts}, issuance.Config{Log: p.Log})
	srv := &http.Server{Handler: httpapi.NewRouter(httpapi.ChallengeGroup(iss)), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	reg := &worker.Registry{}
	reg.Register(acmeacct.KindRegister, accts.RegisterStep)
	for _, k := range issuance.Kinds {
		reg.Register(k, iss.Step)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = worker.Run(ctx, p.Queue, reg, worker.Options{Concurrency: 4, Logger: p.Log,
			Backoff: func(int) time.Duration { return 20 * time.Millisecond }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return issuing{p: p, accts: accts, certs: certSvc, iss: iss}
}
