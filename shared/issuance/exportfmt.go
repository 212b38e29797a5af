package issuance

// The export file formats: a zip in certbot's layout, one PEM file, and a
// PKCS #12 (PFX) bundle.

import (
	"archive/zip"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Export formats.
const (
	// FormatZip is a zip of <name>/cert.pem, chain.pem, fullchain.pem and
	// privkey.pem (certbot's live/<name>/ layout; privkey.pem only with
	// the key). The default.
	FormatZip = "zip"
	// FormatPEM is one PEM file: the full chain, then the key if any.
	FormatPEM = "pem"
	// FormatPFX is a PKCS #12 bundle of the key, the leaf and the
	// issuers, encrypted with a password (pkcs12.Modern: PBES2 with
	// AES-256-CBC and PBKDF2-HMAC-SHA-256, SHA-256 MAC). It needs the key
	// and a non-empty password.
	FormatPFX = "pfx"
)

// ExportFormats lists the formats, the default first.
var ExportFormats = []string{FormatZip, FormatPEM, FormatPFX}

// MaxExportPasswordLen bounds a PFX password, in bytes.
const MaxExportPasswordLen = 1024

// ExportFile is an encoded export.
type ExportFile struct {
	// Filename is the download's name: FileBase plus the format's
	// extension.
	Filename    string
	ContentType string
	Body        []byte
}

// CheckExportRequest validates an export request before any work is
// done: format (one of ExportFormats, any case; "" means zip), and for pfx the key
// (withKey) and the password (non-empty, at most MaxExportPasswordLen
// bytes of UTF-8 in the Basic Multilingual Plane, as PKCS #12's BMPString
// needs). It returns the format. Errors: Invalid naming "format",
// "include_key" or "password".
func CheckExportRequest(format string, withKey bool, password string) (string, error) {
	switch format = strings.ToLower(format); format {
	case "":
		return FormatZip, nil
	case FormatZip, FormatPEM:
		return format, nil
	case FormatPFX:
	default:
		return "", apperr.InvalidField("format", "must be one of %s, not %q", strings.Join(ExportFormats, ", "), format)
	}
	if !withKey {
		return "", apperr.InvalidField("include_key", "a pfx bundle carries the private key; for certificates only use format=pem or zip")
	}
	if password == "" {
		return "", apperr.InvalidField("password", "a pfx export needs a password in the X-Export-Password header")
	}
	if len(password) > MaxExportPasswordLen {
		return "", apperr.InvalidField("password", "is longer than %d bytes", MaxExportPasswordLen)
	}
	if !utf8.ValidString(password) {
		return "", apperr.InvalidField("password", "is not UTF-8")
	}
	for _, r := range password {
		if r > 0xFFFF {
			return "", apperr.InvalidField("password", "has a character outside the Basic Multilingual Plane, which PKCS #12 cannot encode")
		}
	}
	return FormatPFX, nil
}

// Encode encodes the export in format (see CheckExportRequest, which it
// applies; withKey is whether e holds the key). Errors: Invalid from
// CheckExportRequest; anything else is internal.
func (e Export) Encode(format, password string) (ExportFile, error) {
	format, err := CheckExportRequest(format, e.KeyPEM != "", password)
	if err != nil {
		return ExportFile{}, err
	}
	f := ExportFile{Filename: e.FileBase() + "." + format}
	switch format {
	case FormatPEM:
		f.ContentType, f.Body = "application/x-pem-file", e.PEM()
	case FormatPFX:
		f.ContentType = "application/x-pkcs12"
		f.Body, err = e.PFX(password)
	default:
		f.ContentType = "application/zip"
		f.Body, err = e.Zip()
	}
	if err != nil {
		return ExportFile{}, err
	}
	return f, nil
}

// FileBase is the export's file and folder name: the primary name with
// "*" written "_wildcard" (certbot's lineage names cannot hold "*") and
// anything but letters, digits, "-", "_" and "." as "_".
func (e Export) FileBase() string {
	name := strings.ReplaceAll(e.Name, "*", "_wildcard")
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	name = strings.TrimLeft(name, ".")
	if name == "" {
		return "certificate"
	}
	return name
}

// PEM is one PEM file: the full chain, then the key if e holds it.
func (e Export) PEM() []byte {
	return []byte(e.FullChainPEM + e.KeyPEM)
}

// Zip is a zip of FileBase()/cert.pem, chain.pem, fullchain.pem and, when
// e holds the key, privkey.pem (mode 0600; the others 0644). Entries are
// dated at the leaf's NotBefore, so one certificate zips to the same
// bytes each time.
func (e Export) Zip() ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	type file struct {
		name, body string
		mode       fs.FileMode
	}
	files := []file{{"cert.pem", e.CertPEM, 0o644}, {"chain.pem", e.ChainPEM, 0o644}, {"fullchain.pem", e.FullChainPEM, 0o644}}
	if e.KeyPEM != "" {
		files = append(files, file{"privkey.pem", e.KeyPEM, 0o600})
	}
	dir := e.FileBase()
	for _, f := range files {
		h := &zip.FileHeader{Name: dir + "/" + f.name, Method: zip.Deflate, Modified: e.NotBefore}
		h.SetMode(f.mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, fmt.Errorf("issuance: zip: %w", err)
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			return nil, fmt.Errorf("issuance: zip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("issuance: zip: %w", err)
	}
	return buf.Bytes(), nil
}

// PFX is a PKCS #12 bundle (pkcs12.Modern) of the key, the leaf and the
// issuers under password. Errors: Invalid ("include_key") when e holds no
// key, Invalid ("password") for an empty password; anything else is
// internal.
func (e Export) PFX(password string) ([]byte, error) {
	if _, err := CheckExportRequest(FormatPFX, e.KeyPEM != "", password); err != nil {
		return nil, err
	}
	kb, _ := pem.Decode([]byte(e.KeyPEM))
	if kb == nil {
		return nil, fmt.Errorf("issuance: pfx: the key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("issuance: pfx: the key is not PKCS #8")
	}
	leaf, issuers, err := splitChain(e.FullChainPEM)
	if err != nil {
		return nil, fmt.Errorf("issuance: pfx: %w", err)
	}
	pfx, err := pkcs12.Modern.Encode(key, leaf, issuers, password)
	if err != nil {
		return nil, fmt.Errorf("issuance: pfx: %w", err)
	}
	return pfx, nil
}
