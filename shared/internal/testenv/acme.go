package testenv

import (
	"testing"

	"github.com/certfleet/certfleet/shared/acme"
	"github.com/certfleet/certfleet/shared/acmeacct"
	"github.com/certfleet/certfleet/shared/internal/pebbletest"
)

// ACMEAccounts starts a Pebble (with opts) and returns an ACME account
// service over the parts whose "letsencrypt" provider is that Pebble.
// Registrations it queues run with p.RunQueued and acmeacct.KindRegister.
func (p *Parts) ACMEAccounts(tb testing.TB, opts pebbletest.Options) (*acmeacct.Service, *pebbletest.Pebble) {
	tb.Helper()
	peb := pebbletest.Start(tb, opts)
	ca, err := acme.New(acme.Config{RootsPEMFile: peb.RootsPEMFile})
	if err != nil {
		tb.Fatal(err)
	}
	svc := acmeacct.New(p.Store, p.Sealer, p.Queue, ca, acmeacct.Config{
		Directories: map[string]string{"letsencrypt": peb.DirectoryURL}, Log: p.Log})
	return svc, peb
}
