package issuance_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/issuance"
)

func TestARICertID(t *testing.T) {
	// RFC 9773 §4.1's example: keyIdentifier 69:88:5B:...:D4 and serial
	// 0x87654321, whose DER encoding is 00 87 65 43 21.
	aki := []byte{0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
		0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4}
	for _, tc := range []struct {
		name   string
		serial *big.Int
		want   string
	}{
		{"RFC 9773 example", big.NewInt(0x87654321), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"},
		{"no leading zero", big.NewInt(0x7f01), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.fwE"},
		{"zero", big.NewInt(0), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AA"},
		{"20 octets, high bit set", new(big.Int).Lsh(big.NewInt(1), 159), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIAAAAAAAAAAAAAAAAAAAAAAAAAA"},
	} {
		got, err := issuance.ARICertID(&x509.Certificate{AuthorityKeyId: aki, SerialNumber: tc.serial})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: ARICertID = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A certificate as a CA makes it: the leaf's AKI is the issuer's SKI.
func TestARICertIDOfIssuedCertificate(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ski := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ARI test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: ski}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	serial := new(big.Int).SetBytes([]byte{0xC0, 0xFF, 0xEE, 0x01})
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: serial, DNSNames: []string{"ari.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, caCert, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	got, err := issuance.ARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	want := base64.RawURLEncoding.EncodeToString(ski) + "." + base64.RawURLEncoding.EncodeToString([]byte{0, 0xC0, 0xFF, 0xEE, 0x01})
	if got != want {
		t.Errorf("ARICertID = %q, want %q", got, want)
	}
}

func TestARICertIDErrors(t *testing.T) {
	for name, c := range map[string]*x509.Certificate{
		"nil":       nil,
		"no AKI":    {SerialNumber: big.NewInt(5)},
		"no serial": {AuthorityKeyId: []byte{1}},
	} {
		got, err := issuance.ARICertID(c)
		if err == nil || got != "" {
			t.Errorf("%s: ARICertID = %q, %v; want an error", name, got, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "issuance: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
}
