package issuance

// Export: a certificate's current certificate, its chain and (when the
// certificate's policy allows it) its private key decrypted by the server
// (cert-ctrl device protocol §3.5, server_decrypt_export).

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Stable reasons of the export errors, sent as the cert-ctrl envelope's
// error.key (apperr.Error.Key).
const (
	// ReasonExportForbidden: the key was asked for but the certificate's
	// server_decrypt_export is off ("Server-decrypted export disabled by
	// policy", 403).
	ReasonExportForbidden = "EXPORT_FORBIDDEN"
	// ReasonNotIssued: the certificate has no issued certificate yet (409).
	ReasonNotIssued = "NOT_ISSUED"
)

// Export is a certificate's current certificate, ready to encode (see
// Encode, Zip, PEM and PFX in exportfmt.go). It holds the private key in
// the clear when asked for: never log it.
type Export struct {
	// Name is the certificate's primary name (the first name issued).
	Name string
	// IssueID is the issue that issued the certificate.
	IssueID int64
	// CertPEM is the leaf alone.
	CertPEM string
	// ChainPEM is the issuers, without the leaf ("" for a leaf the CA
	// sent alone).
	ChainPEM string
	// FullChainPEM is the leaf followed by the issuers.
	FullChainPEM string
	// KeyPEM is the private key as PKCS #8 ("PRIVATE KEY"); "" unless the
	// key was asked for.
	KeyPEM string
	// NotBefore and NotAfter are the leaf's validity.
	NotBefore, NotAfter time.Time
	// Revoked says the certificate was revoked; it is still exported.
	Revoked bool
}

// Export returns the certificate's current certificate (the issue
// CertSpec.IssueID names) with its chain and, when withKey, its private
// key opened with the sealer. A revoked certificate is still exported
// (with Revoked set): the owner may need it to inspect or replace it.
//
// Errors: NotFound for an unknown or another user's certificate (from
// CertSource.Spec), or for a key the server does not hold; Forbidden with
// Key ReasonExportForbidden when withKey and the certificate's
// server_decrypt_export is off (checked first, whatever the certificate's
// state); Conflict with Key ReasonNotIssued before the first issue is issued.
// Anything else is internal.
func (s *Service) Export(ctx context.Context, userID, certID int64, withKey bool) (Export, error) {
	spec, err := s.certs.Spec(ctx, userID, certID)
	if err != nil {
		return Export{}, err
	}
	if withKey && !spec.ServerDecryptExport {
		return Export{}, apperr.New(apperr.Forbidden,
			"Server-decrypted export disabled by policy: certificate %d does not allow server_decrypt_export; export without the key (include_key=false) or enable it on the certificate", certID).
			WithKey(ReasonExportForbidden)
	}
	if spec.IssueID == 0 {
		return Export{}, notIssued(certID)
	}
	rec, _, err := s.load(ctx, userID, certID, spec.IssueID)
	if err != nil {
		return Export{}, err
	}
	if rec.Status != StatusIssued && rec.Status != StatusRevoked {
		return Export{}, notIssued(certID)
	}
	leaf, issuers, err := splitChain(rec.ChainPEM)
	if err != nil {
		return Export{}, fmt.Errorf("issuance: issue %d: %w", rec.ID, err)
	}
	out := Export{IssueID: rec.ID, NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), Revoked: rec.Status == StatusRevoked,
		CertPEM: string(pemCert(leaf.Raw))}
	for _, c := range issuers {
		out.ChainPEM += string(pemCert(c.Raw))
	}
	out.FullChainPEM = out.CertPEM + out.ChainPEM
	switch {
	case len(rec.Names) > 0:
		out.Name = rec.Names[0]
	case len(leaf.DNSNames) > 0:
		out.Name = leaf.DNSNames[0]
	default:
		out.Name = leaf.Subject.CommonName
	}
	if !withKey {
		return out, nil
	}
	if len(rec.SealedKey) == 0 {
		return Export{}, apperr.New(apperr.NotFound, "the server does not hold the private key of certificate %d", certID)
	}
	der, err := s.sealer.Open(ctx, rec.SealedKey, sealContext(userID, rec.ID))
	if err != nil {
		return Export{}, fmt.Errorf("issuance: open the key of issue %d: %w", rec.ID, err)
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return Export{}, fmt.Errorf("issuance: the key of issue %d is not PKCS #8", rec.ID)
	}
	pub, ok := key.(crypto.Signer)
	if !ok || !publicKeysEqual(pub.Public(), leaf.PublicKey) {
		return Export{}, fmt.Errorf("issuance: the key of issue %d does not match its certificate", rec.ID)
	}
	out.KeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return out, nil
}

func notIssued(certID int64) error {
	return apperr.New(apperr.Conflict, "certificate %d has not been issued yet", certID).WithKey(ReasonNotIssued)
}

// splitChain parses a PEM chain, leaf first; blocks other than
// CERTIFICATE are skipped.
func splitChain(chainPEM string) (*x509.Certificate, []*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := []byte(chainPEM); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("stored chain: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("stored chain holds no certificate")
	}
	return certs[0], certs[1:], nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
