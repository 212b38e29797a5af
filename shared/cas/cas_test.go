package cas_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/cas"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

func newService(t *testing.T, cfg cas.Config) (*cas.Service, *testenv.Parts) {
	t.Helper()
	p := testenv.New(t)
	cfg.Now, cfg.Log = p.Clock.Now, p.Log
	return cas.New(p.Store, p.Sealer, cfg), p
}

func wantCode(t *testing.T, err error, code apperr.Code, field string) {
	t.Helper()
	if apperr.CodeOf(err) != code {
		t.Fatalf("error %v; want %s", err, code)
	}
	if field != "" {
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Field != field {
			t.Fatalf("error %#v; want field %q", err, field)
		}
	}
}

func TestTableIsTheCertificatesTable(t *testing.T) {
	if cas.Table != certs.Table || cas.CounterTable != certs.CounterTable {
		t.Fatalf("cas tables %s/%s, certs %s/%s", cas.Table, cas.CounterTable, certs.Table, certs.CounterTable)
	}
}

// A new CA is a self-signed root with the asked subject, defaults for
// what was not asked, and its key stored only sealed, to the user and
// the CA.
func TestCreateMakesASelfSignedRoot(t *testing.T) {
	svc, p := newService(t, cas.Config{})
	ctx := context.Background()
	ca, err := svc.Create(ctx, 1, cas.NewCA{Name: " Lab root ", Organization: "Example Labs", Country: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	if ca.ID <= 0 || ca.UserID != 1 || ca.Name != "Lab root" || ca.CommonName != "Lab root" || ca.Algorithm != cas.KeyECDSA ||
		ca.KeySize != 256 || ca.ValidDays != cas.DefaultValidDays || ca.Status != cas.StatusActive || !ca.Active() {
		t.Fatalf("created %+v", ca)
	}
	cert, err := x509.ParseCertificate(ca.CertificateDER())
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 || cert.CheckSignatureFrom(cert) != nil {
		t.Fatalf("not a self-signed CA: IsCA %v, key usage %v, signature %v", cert.IsCA, cert.KeyUsage, cert.CheckSignatureFrom(cert))
	}
	if cert.Subject.CommonName != "Lab root" || cert.Subject.Organization[0] != "Example Labs" || cert.Subject.Country[0] != "DE" {
		t.Fatalf("subject %v", cert.Subject)
	}
	if serial, _ := new(big.Int).SetString(ca.SerialNumber, 16); serial == nil || serial.Cmp(cert.SerialNumber) != 0 {
		t.Fatalf("serial_number %s, certificate %x", ca.SerialNumber, cert.SerialNumber)
	}
	if want := p.Clock.Now().AddDate(0, 0, cas.DefaultValidDays); cert.NotAfter.Sub(want).Abs() > time.Second || !cert.NotAfter.Equal(ca.NotAfter) {
		t.Fatalf("not after %v; want %v", cert.NotAfter, want)
	}
	if len(cert.SubjectKeyId) == 0 {
		t.Fatal("no subject key id")
	}

	// The stored record holds the key sealed; it opens only under the
	// CA's own context, to the key of the certificate.
	it, err := p.Store.Get(ctx, cas.Key(1, ca.ID))
	if err != nil {
		t.Fatal(err)
	}
	var stored struct {
		SealedKey []byte `json:"sealed_key"`
	}
	if err := json.Unmarshal(it.Value, &stored); err != nil || len(stored.SealedKey) == 0 {
		t.Fatalf("sealed key: %v (%d bytes)", err, len(stored.SealedKey))
	}
	encCtx := map[string]string{"table": "certs", "kind": "ca", "user": "1", "id": "1"}
	der, err := p.Sealer.Open(ctx, stored.SealedKey, encCtx)
	if err != nil {
		t.Fatalf("open the CA key: %v", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Fatal("the sealed key is not the certificate's")
	}
	encCtx["user"] = "2"
	if _, err := p.Sealer.Open(ctx, stored.SealedKey, encCtx); err == nil {
		t.Fatal("the key opened under another user's context")
	}

	rsaCA, err := svc.Create(ctx, 1, cas.NewCA{Name: "rsa", Algorithm: "rsa", KeySize: 2048, ValidDays: 30})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := x509.ParseCertificate(rsaCA.CertificateDER())
	if err != nil || rc.PublicKeyAlgorithm != x509.RSA || rsaCA.Algorithm != cas.KeyRSA || rsaCA.ValidDays != 30 {
		t.Fatalf("RSA CA %+v: %v", rsaCA, err)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	svc, _ := newService(t, cas.Config{})
	for _, c := range []struct {
		in    cas.NewCA
		field string
	}{
		{cas.NewCA{}, "name"},
		{cas.NewCA{Name: "  "}, "name"},
		{cas.NewCA{Name: strings.Repeat("n", 129)}, "name"},
		{cas.NewCA{Name: "x", CommonName: "two\nlines"}, "common_name"},
		{cas.NewCA{Name: "x", Country: "Germany"}, "country"},
		{cas.NewCA{Name: "x", Country: "de"}, "country"},
		{cas.NewCA{Name: "x", Algorithm: "DSA"}, "algorithm"},
		{cas.NewCA{Name: "x", Algorithm: "RSA", KeySize: 1024}, "key_size"},
		{cas.NewCA{Name: "x", KeySize: 2048}, "key_size"},
		{cas.NewCA{Name: "x", ValidDays: -1}, "valid_days"},
		{cas.NewCA{Name: "x", ValidDays: cas.MaxValidDays + 1}, "valid_days"},
	} {
		_, err := svc.Create(context.Background(), 1, c.in)
		wantCode(t, err, apperr.Invalid, c.field)
	}
	if list, total, err := svc.List(context.Background(), 1, nil, 0, 0); err != nil || total != 0 || len(list) != 0 {
		t.Fatalf("a refused CA was stored: %d, %v", total, err)
	}
}

func TestMaxPerUser(t *testing.T) {
	svc, _ := newService(t, cas.Config{MaxPerUser: 2})
	ctx := context.Background()
	a, err := svc.Create(ctx, 1, cas.NewCA{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, 1, cas.NewCA{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Create(ctx, 1, cas.NewCA{Name: "c"})
	wantCode(t, err, apperr.Conflict, "")
	if _, err := svc.Create(ctx, 2, cas.NewCA{Name: "other user"}); err != nil {
		t.Fatalf("the bound is per user: %v", err)
	}
	if err := svc.Delete(ctx, 1, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, 1, cas.NewCA{Name: "c"}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

func TestListUpdateAndOwnership(t *testing.T) {
	svc, _ := newService(t, cas.Config{})
	ctx := context.Background()
	var ids []int64
	for _, name := range []string{"one", "two", "three"} {
		ca, err := svc.Create(ctx, 1, cas.NewCA{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ca.ID)
	}
	other, err := svc.Create(ctx, 2, cas.NewCA{Name: "theirs"})
	if err != nil {
		t.Fatal(err)
	}
	list, total, err := svc.List(ctx, 1, nil, 1, 1)
	if err != nil || total != 3 || len(list) != 1 || list[0].Name != "two" {
		t.Fatalf("List offset 1 limit 1 = %+v, %d, %v", list, total, err)
	}
	list, total, err = svc.List(ctx, 1, func(id int64) bool { return id == ids[2] }, 0, 0)
	if err != nil || total != 1 || len(list) != 1 || list[0].ID != ids[2] {
		t.Fatalf("List allowed = %+v, %d, %v", list, total, err)
	}

	name, inactive := "renamed", "inactive"
	ca, err := svc.Update(ctx, 1, ids[0], cas.Changes{Name: &name, Status: &inactive})
	if err != nil || ca.Name != "renamed" || ca.Status != cas.StatusInactive || ca.Active() {
		t.Fatalf("Update = %+v, %v", ca, err)
	}
	if got, _ := svc.Get(ctx, 1, ids[0]); got.Name != "renamed" || got.Status != cas.StatusInactive {
		t.Fatalf("Get after Update = %+v", got)
	}
	bad, empty := "REVOKED", " "
	_, err = svc.Update(ctx, 1, ids[0], cas.Changes{Status: &bad})
	wantCode(t, err, apperr.Invalid, "status")
	_, err = svc.Update(ctx, 1, ids[0], cas.Changes{Name: &empty})
	wantCode(t, err, apperr.Invalid, "name")

	// Another user's CA is not found, whatever the call.
	_, err = svc.Get(ctx, 1, other.ID)
	wantCode(t, err, apperr.NotFound, "")
	_, err = svc.Update(ctx, 1, other.ID, cas.Changes{Name: &name})
	wantCode(t, err, apperr.NotFound, "")
	wantCode(t, svc.Delete(ctx, 1, other.ID), apperr.NotFound, "")
	if got, err := svc.Get(ctx, 2, other.ID); err != nil || got.Name != "theirs" {
		t.Fatalf("the other user's CA changed: %+v, %v", got, err)
	}
}

// Delete takes the CA off its devices before deleting it; when that
// fails, the CA is already gone to every reader and the next Delete
// finishes it.
func TestDeleteIsFinishedByARetry(t *testing.T) {
	fail := true
	var calls []int64
	svc, p := newService(t, cas.Config{OnDelete: func(_ context.Context, userID, caID int64) error {
		calls = append(calls, caID)
		if fail {
			return errors.New("stream unavailable")
		}
		return nil
	}})
	ctx := context.Background()
	ca, err := svc.Create(ctx, 1, cas.NewCA{Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, 1, ca.ID); err == nil || apperr.CodeOf(err) == apperr.NotFound {
		t.Fatalf("Delete with a failing hook = %v", err)
	}
	_, err = svc.Get(ctx, 1, ca.ID)
	wantCode(t, err, apperr.NotFound, "")
	_, err = svc.Info(ctx, 1, ca.ID)
	wantCode(t, err, apperr.NotFound, "")
	if _, total, _ := svc.List(ctx, 1, nil, 0, 0); total != 0 {
		t.Fatalf("a deleting CA is listed (%d)", total)
	}
	if _, err := p.Store.Get(ctx, cas.Key(1, ca.ID)); err != nil {
		t.Fatalf("the record went before its devices were told: %v", err)
	}
	fail = false
	if err := svc.Delete(ctx, 1, ca.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Store.Get(ctx, cas.Key(1, ca.ID)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record after the retry: %v", err)
	}
	if len(calls) != 2 || calls[0] != ca.ID || calls[1] != ca.ID {
		t.Fatalf("OnDelete calls %v", calls)
	}
	wantCode(t, svc.Delete(ctx, 1, ca.ID), apperr.NotFound, "")
}
