package issuance

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
)

// ARICertID returns the ACME Renewal Information certificate identifier of
// leaf (RFC 9773 §4.1): the base64url (unpadded) keyIdentifier of its
// Authority Key Identifier extension, ".", and the base64url (unpadded)
// DER encoding of its serial number without tag and length, so with the
// leading zero octet DER puts before a serial whose first octet has its
// high bit set. It is both the renewalInfo path element and the value of
// a new order's "replaces". A leaf without an Authority Key Identifier
// has no identifier: that is an error.
func ARICertID(leaf *x509.Certificate) (string, error) {
	if leaf == nil {
		return "", errors.New("issuance: ARI certificate id: no certificate")
	}
	if len(leaf.AuthorityKeyId) == 0 {
		return "", errors.New("issuance: ARI certificate id: the certificate has no Authority Key Identifier")
	}
	if leaf.SerialNumber == nil {
		return "", errors.New("issuance: ARI certificate id: the certificate has no serial number")
	}
	serial, err := serialDER(leaf)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(leaf.AuthorityKeyId) + "." + enc(serial), nil
}

// serialDER is the content octets of the serial's DER INTEGER: the
// minimal two's complement big-endian encoding.
func serialDER(leaf *x509.Certificate) ([]byte, error) {
	der, err := asn1.Marshal(leaf.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("issuance: ARI certificate id: serial: %w", err)
	}
	// Tag (0x02), then a short length (< 0x80) or 0x80|n followed by n
	// length octets.
	if len(der) < 3 || der[0] != 0x02 {
		return nil, errors.New("issuance: ARI certificate id: serial is no DER INTEGER")
	}
	hdr := 2
	if der[1]&0x80 != 0 {
		hdr += int(der[1] & 0x7f)
	}
	if hdr >= len(der) {
		return nil, errors.New("issuance: ARI certificate id: serial is no DER INTEGER")
	}
	return der[hdr:], nil
}
