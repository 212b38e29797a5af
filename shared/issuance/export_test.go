package issuance_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/issuance"
)

// issueFor issues the certificate against Pebble and checks that the
// issue was recorded on the certificate (CertSpec.IssueID), returning the
// issue.
func (r *rig) issueFor(t *testing.T, certID int64, spec issuance.CertSpec) issuance.Issue {
	t.Helper()
	r.certs.add(certID, spec)
	is, err := r.svc.Start(context.Background(), userID, certID)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	got := r.wait(t, certID, is.ID)
	if got.Status != issuance.StatusIssued {
		t.Fatalf("issue %d: %s (%s)", is.ID, got.Status, got.Error)
	}
	spec.IssueID = r.certs.get(certID).IssueID
	if spec.IssueID != is.ID {
		t.Fatalf("recorded issue %d, want %d", spec.IssueID, is.ID)
	}
	r.certs.add(certID, spec)
	return got
}

func pemBlocks(t *testing.T, s string) []*pem.Block {
	t.Helper()
	var out []*pem.Block
	for rest := []byte(s); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if strings.TrimSpace(string(rest)) != "" {
				t.Fatalf("trailing non-PEM data %q", rest)
			}
			return out
		}
		out = append(out, b)
	}
}

func certsOf(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, b := range pemBlocks(t, s) {
		if b.Type != "CERTIFICATE" {
			t.Fatalf("block %q in a certificate file", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

func unzip(t *testing.T, body []byte) map[string]*zip.File {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatalf("not a zip: %v", err)
	}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	return files
}

func readZipped(t *testing.T, f *zip.File) string {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type equaler interface{ Equal(crypto.PublicKey) bool }

// TestExport exports a certificate issued by Pebble in each format, with
// and without its key, and the refusals.
func TestExport(t *testing.T) {
	t.Parallel()
	r := startRig(t)
	ctx := context.Background()
	const name = "export.certfleet.test"
	spec := issuance.CertSpec{Names: []string{name, "www." + name}, KeyAlgorithm: issuance.KeyECDSA, KeySize: 256,
		AcctID: 1, ValidationMethod: "http-01", ServerDecryptExport: true}

	// Not issued yet: 409 NOT_ISSUED, with or without the key.
	r.certs.add(1, spec)
	for _, withKey := range []bool{true, false} {
		_, err := r.svc.Export(ctx, userID, 1, withKey)
		if apperr.CodeOf(err) != apperr.Conflict || apperr.KeyOf(err) != issuance.ReasonNotIssued ||
			!strings.Contains(err.Error(), "certificate 1 has not been issued yet") {
			t.Fatalf("export before issue (key %v): %v", withKey, err)
		}
	}
	if _, err := r.svc.Export(ctx, userID, 99, false); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("unknown certificate: %v", err)
	}

	is := r.issueFor(t, 1, spec)
	issued := parseChain(t, is.ChainPEM)

	ex, err := r.svc.Export(ctx, userID, 1, true)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if ex.Name != name || ex.IssueID != is.ID || ex.Revoked || !ex.NotAfter.Equal(issued[0].NotAfter) || !ex.NotBefore.Equal(issued[0].NotBefore) {
		t.Errorf("export %q issue %d revoked %v, %s..%s", ex.Name, ex.IssueID, ex.Revoked, ex.NotBefore, ex.NotAfter)
	}
	leaf, chain, full := certsOf(t, ex.CertPEM), certsOf(t, ex.ChainPEM), certsOf(t, ex.FullChainPEM)
	if len(leaf) != 1 || !leaf[0].Equal(issued[0]) {
		t.Fatalf("cert.pem holds %d certificates, not the issued leaf", len(leaf))
	}
	if len(chain) == 0 || !sameCerts(chain, issued[1:]) {
		t.Fatalf("chain.pem holds %d certificates, not the %d issuers", len(chain), len(issued)-1)
	}
	if ex.FullChainPEM != ex.CertPEM+ex.ChainPEM || !sameCerts(full, issued) {
		t.Fatalf("fullchain.pem is not leaf + chain")
	}
	kb := pemBlocks(t, ex.KeyPEM)
	if len(kb) != 1 || kb[0].Type != "PRIVATE KEY" {
		t.Fatalf("key PEM holds %d blocks", len(kb))
	}
	key, err := x509.ParsePKCS8PrivateKey(kb[0].Bytes)
	if err != nil {
		t.Fatalf("key is not PKCS #8: %v", err)
	}
	if !key.(crypto.Signer).Public().(equaler).Equal(issued[0].PublicKey) {
		t.Fatal("the exported key does not match the leaf")
	}

	// zip: certbot's four files under the name.
	f, err := ex.Encode("", "")
	if err != nil {
		t.Fatal(err)
	}
	if f.ContentType != "application/zip" || f.Filename != name+".zip" {
		t.Errorf("zip file %q, %q", f.Filename, f.ContentType)
	}
	files := unzip(t, f.Body)
	want := map[string]string{"cert.pem": ex.CertPEM, "chain.pem": ex.ChainPEM, "fullchain.pem": ex.FullChainPEM, "privkey.pem": ex.KeyPEM}
	if len(files) != len(want) {
		t.Errorf("zip holds %d files, want %d", len(files), len(want))
	}
	for base, body := range want {
		zf, ok := files[name+"/"+base]
		if !ok {
			t.Errorf("no %s/%s in the zip", name, base)
			continue
		}
		if got := readZipped(t, zf); got != body {
			t.Errorf("%s differs from the export", base)
		}
		if base == "privkey.pem" && zf.Mode().Perm() != 0o600 {
			t.Errorf("privkey.pem mode %v", zf.Mode())
		}
	}
	if again, _ := ex.Zip(); !bytes.Equal(again, f.Body) {
		t.Error("zipping the same export twice gave different bytes")
	}

	// pem: the full chain, then the key.
	f, err = ex.Encode("PEM", "")
	if err != nil {
		t.Fatal(err)
	}
	if f.ContentType != "application/x-pem-file" || f.Filename != name+".pem" || string(f.Body) != ex.FullChainPEM+ex.KeyPEM {
		t.Errorf("pem file %q, %q", f.Filename, f.ContentType)
	}

	// pfx: decodes with the password to the same key, leaf and chain.
	const password = "correct horse ✓"
	f, err = ex.Encode(issuance.FormatPFX, password)
	if err != nil {
		t.Fatal(err)
	}
	if f.ContentType != "application/x-pkcs12" || f.Filename != name+".pfx" {
		t.Errorf("pfx file %q, %q", f.Filename, f.ContentType)
	}
	pk, pleaf, pchain, err := pkcs12.DecodeChain(f.Body, password)
	if err != nil {
		t.Fatalf("DecodeChain: %v", err)
	}
	if !pleaf.Equal(issued[0]) || !sameCerts(pchain, issued[1:]) {
		t.Error("the pfx holds another leaf or chain")
	}
	if !pk.(interface{ Equal(crypto.PrivateKey) bool }).Equal(key) {
		t.Error("the pfx holds another key")
	}
	if _, _, _, err := pkcs12.DecodeChain(f.Body, "wrong"); err == nil {
		t.Error("the pfx opens with a wrong password")
	}
	if _, err := ex.Encode(issuance.FormatPFX, ""); apperr.CodeOf(err) != apperr.Invalid || !strings.HasPrefix(apperr.MessageOf(err), "password:") {
		t.Errorf("pfx without a password: %v", err)
	}

	// Without server_decrypt_export the key is refused (403
	// EXPORT_FORBIDDEN); the certificates alone are not.
	const other = "nokey.certfleet.test"
	locked := issuance.CertSpec{Names: []string{other}, KeyAlgorithm: issuance.KeyRSA, KeySize: 2048, AcctID: 1, ValidationMethod: "http-01"}
	if _, err := r.svc.Export(ctx, userID, 2, true); apperr.CodeOf(err) != apperr.NotFound {
		t.Fatalf("unknown certificate with key: %v", err)
	}
	r.certs.add(2, locked)
	if _, err := r.svc.Export(ctx, userID, 2, true); apperr.CodeOf(err) != apperr.Forbidden || apperr.KeyOf(err) != issuance.ReasonExportForbidden {
		t.Fatalf("key export before issue without server_decrypt_export: %v", err)
	}
	is2 := r.issueFor(t, 2, locked)
	_, err = r.svc.Export(ctx, userID, 2, true)
	if apperr.CodeOf(err) != apperr.Forbidden || apperr.KeyOf(err) != issuance.ReasonExportForbidden ||
		!strings.Contains(apperr.MessageOf(err), "disabled by policy") {
		t.Fatalf("key export without server_decrypt_export: %v", err)
	}
	ex2, err := r.svc.Export(ctx, userID, 2, false)
	if err != nil {
		t.Fatalf("export without the key: %v", err)
	}
	if ex2.KeyPEM != "" || ex2.Name != other || !sameCerts(certsOf(t, ex2.FullChainPEM), parseChain(t, is2.ChainPEM)) {
		t.Fatalf("export without the key: %q, key %v", ex2.Name, ex2.KeyPEM != "")
	}
	f, err = ex2.Encode(issuance.FormatZip, "")
	if err != nil {
		t.Fatal(err)
	}
	files = unzip(t, f.Body)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{other + "/cert.pem", other + "/chain.pem", other + "/fullchain.pem"}) {
		t.Errorf("zip without the key holds %q", names)
	}
	if f, err := ex2.Encode(issuance.FormatPEM, ""); err != nil || strings.Contains(string(f.Body), "PRIVATE KEY") {
		t.Errorf("pem without the key: %v", err)
	}
	if _, err := ex2.Encode(issuance.FormatPFX, "pw"); apperr.CodeOf(err) != apperr.Invalid || !strings.HasPrefix(apperr.MessageOf(err), "include_key:") {
		t.Errorf("pfx without the key: %v", err)
	}

	// A revoked certificate is still exported, marked revoked. The fake
	// forgets the issue on RecordRevoked; certs.Service keeps the record's
	// issue_id (it only stops renewing), so the fake is told it again.
	was := r.certs.get(1)
	if _, err := r.svc.Revoke(ctx, userID, 1, 4); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if err := r.certs.RecordIssued(ctx, userID, 1, was); err != nil {
		t.Fatal(err)
	}
	rev, err := r.svc.Export(ctx, userID, 1, true)
	if err != nil || !rev.Revoked || rev.CertPEM != ex.CertPEM || rev.KeyPEM != ex.KeyPEM {
		t.Fatalf("export after revocation: revoked %v, %v", rev.Revoked, err)
	}
}

func TestCheckExportRequest(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format   string
		withKey  bool
		password string
		want     string // the format, or the field of the Invalid error
	}{
		{"", true, "", "zip"},
		{"zip", false, "", "zip"},
		{"Pem", true, "", "pem"},
		{"pfx", true, "pw", "pfx"},
		{"p7b", true, "", "format"},
		{"pfx", false, "pw", "include_key"},
		{"pfx", true, "", "password"},
		{"pfx", true, strings.Repeat("x", issuance.MaxExportPasswordLen+1), "password"},
		{"pfx", true, "emoji \U0001F600", "password"},
		{"pfx", true, "bad \xff utf-8", "password"},
	} {
		got, err := issuance.CheckExportRequest(c.format, c.withKey, c.password)
		var ae *apperr.Error
		switch {
		case err == nil && got != c.want:
			t.Errorf("%q key %v: format %q, want %q", c.format, c.withKey, got, c.want)
		case err != nil && (!errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Field != c.want):
			t.Errorf("%q key %v: %v, want Invalid %s", c.format, c.withKey, err, c.want)
		}
	}
}

func TestExportFileBase(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"example.com":       "example.com",
		"*.example.com":     "_wildcard.example.com",
		"xn--bcher-kva.com": "xn--bcher-kva.com",
		"../etc/passwd":     "_etc_passwd",
		`a"b;c/d`:           "a_b_c_d",
		"":                  "certificate",
	} {
		if got := (issuance.Export{Name: name}).FileBase(); got != want {
			t.Errorf("FileBase(%q) = %q, want %q", name, got, want)
		}
	}
}
