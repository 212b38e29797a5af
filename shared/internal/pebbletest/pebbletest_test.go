package pebbletest_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/internal/pebbletest"
)

func TestStart(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})

	// The API answers over TLS trusted through RootCAs and RootsPEMFile.
	pemBytes, err := os.ReadFile(p.RootsPEMFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", p.RootsPEMFile)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(p.DirectoryURL)
	if err != nil {
		t.Fatalf("GET %s: %v", p.DirectoryURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", p.DirectoryURL, resp.Status)
	}
	resp, err = p.HTTPClient().Get(p.DirectoryURL)
	if err != nil {
		t.Fatalf("HTTPClient: %v", err)
	}
	resp.Body.Close()

	// The issuing root and intermediate come from the management API.
	for name, b := range map[string][]byte{"root": p.IssuerRootsPEM(t), "intermediate": p.IssuerIntermediatePEM(t)} {
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("%s: not a PEM certificate: %q", name, b)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(cert.Subject.CommonName, "Pebble") {
			t.Errorf("%s subject %q, want a Pebble CA", name, cert.Subject)
		}
	}
	if p.IssuerRoots(t) == nil {
		t.Fatal("IssuerRoots: nil pool")
	}
}

func TestInstancesAreIndependent(t *testing.T) {
	a := pebbletest.Start(t, pebbletest.Options{})
	hmac := base64.RawURLEncoding.EncodeToString([]byte("certfleet test EAB HMAC key, 32+"))
	b := pebbletest.Start(t, pebbletest.Options{EAB: map[string]string{"kid-1": hmac}})
	if a.DirectoryURL == b.DirectoryURL || a.ManagementURL == b.ManagementURL {
		t.Fatalf("two instances share ports: %s %s", a.DirectoryURL, b.DirectoryURL)
	}
	if string(a.IssuerRootsPEM(t)) == string(b.IssuerRootsPEM(t)) {
		t.Error("two instances have the same issuing root")
	}
}
