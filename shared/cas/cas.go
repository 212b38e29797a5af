// Package cas is private certificate authorities: a user's own root CAs
// (seed 000's /apiv1/users/:user_id/cas), whose certificates devices take
// into their trust stores (cert-ctrl device protocol §4.1, the ca.assigned
// signal). The CA's private key is made here and stored only sealed
// (keys.Sealer, bound to the user and the CA); no view carries it.
//
// Store layout (table Table, which the CA records share with certificates
// under the user's partition):
//
//	user#<user>  ca#<019d id>  a CA (record)
//	user#<user>  cacount       how many CAs the user has
//
// Ids come from the counter meta/counter/cas. Delete is in two steps so
// that nothing is left pointing at a deleted CA: the record is first
// marked deleting (a new version, which fails every association that read
// the CA before), Config.OnDelete removes it from every device, and only
// then is the record deleted; a Delete that stopped half way is finished
// by the next one.
package cas

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/store"
)

// Tables the service keeps its records in.
const (
	Table        = "certs"
	CounterTable = "meta"
)

// CA statuses. An inactive CA stays on its devices but its bundle is
// refused (403) until it is active again.
const (
	StatusActive   = "ACTIVE"
	StatusInactive = "INACTIVE"
	// statusDeleting marks a CA whose Delete has begun; it reads as
	// absent.
	statusDeleting = "DELETING"
)

// Key algorithms and their sizes are the certificates' (certs.KeySizes).
const (
	KeyECDSA = certs.KeyECDSA
	KeyRSA   = certs.KeyRSA
)

// Validity bounds, in days.
const (
	DefaultValidDays = 3650
	MaxValidDays     = 9125 // 25 years
)

// DefaultMaxPerUser bounds how many CAs one user keeps.
const DefaultMaxPerUser = 100

// maxText bounds names and subject fields.
const maxText = 128

// CA is a private CA as its owner and its devices see it.
type CA struct {
	ID     int64  `json:"id"`
	UserID int64  `json:"user_id"`
	Name   string `json:"name"`
	// Subject of the CA certificate.
	CommonName         string `json:"common_name"`
	Organization       string `json:"organization,omitempty"`
	OrganizationalUnit string `json:"organizational_unit,omitempty"`
	Country            string `json:"country,omitempty"`
	State              string `json:"state,omitempty"`
	Locality           string `json:"locality,omitempty"`
	Algorithm          string `json:"algorithm"`
	KeySize            int    `json:"key_size"`
	ValidDays          int    `json:"valid_days"`
	Status             string `json:"status"`
	// SerialNumber is the CA certificate's serial, lower-case hex.
	SerialNumber   string    `json:"serial_number"`
	CertificatePEM string    `json:"certificate_pem"`
	NotBefore      time.Time `json:"not_before"`
	NotAfter       time.Time `json:"not_after"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Active says whether devices may take the CA's bundle.
func (c CA) Active() bool { return c.Status == StatusActive }

// CertificateDER is the CA certificate in DER.
func (c CA) CertificateDER() []byte {
	b, _ := pem.Decode([]byte(c.CertificatePEM))
	if b == nil {
		return nil
	}
	return b.Bytes
}

// record is the stored CA: the CA beside its sealed key.
type record struct {
	CA
	SealedKey []byte `json:"sealed_key"`
}

// NewCA is what a user gives to create a CA. Name is required; the
// common name defaults to it.
type NewCA struct {
	Name, CommonName, Organization, OrganizationalUnit, Country, State, Locality string
	// Algorithm is ECDSA (default) or RSA; KeySize 0 means its default.
	Algorithm string
	KeySize   int
	// ValidDays 0 means DefaultValidDays.
	ValidDays int
}

// Changes are the fields Update sets; nil leaves one as it is.
type Changes struct {
	Name   *string
	Status *string
}

// Config tunes the service.
type Config struct {
	// MaxPerUser bounds a user's CAs; 0 means DefaultMaxPerUser.
	MaxPerUser int
	// OnDelete takes a CA being deleted off every device it is on (with
	// their signals); Delete deletes the record only after it succeeded.
	OnDelete func(ctx context.Context, userID, caID int64) error
	Now      func() time.Time
	Log      *slog.Logger
}

// Service is the private CA service. Safe for concurrent use.
type Service struct {
	st     store.Store
	sealer keys.Sealer
	cfg    Config
}

// New returns the service over st; CA keys are sealed with sealer.
func New(st store.Store, sealer keys.Sealer, cfg Config) *Service {
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = DefaultMaxPerUser
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{st: st, sealer: sealer, cfg: cfg}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }

const caPrefix = "ca#"

// Key is the store key of the user's CA; an association's transaction
// checks it (see Info.Check).
func Key(userID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("%s%019d", caPrefix, id)}
}
func countKey(userID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: "cacount"}
}

func sealContext(userID, id int64) map[string]string {
	return map[string]string{"table": Table, "kind": "ca", "user": strconv.FormatInt(userID, 10), "id": strconv.FormatInt(id, 10)}
}

func notFound(id int64) error { return apperr.New(apperr.NotFound, "CA %d not found", id) }

// check validates a new CA and fills its defaults. Errors: Invalid
// naming the field.
func (n *NewCA) check() error {
	n.Name = strings.TrimSpace(n.Name)
	if n.Name == "" {
		return apperr.InvalidField("name", "is required")
	}
	if n.CommonName = strings.TrimSpace(n.CommonName); n.CommonName == "" {
		n.CommonName = n.Name
	}
	for _, f := range []struct{ field, v string }{{"name", n.Name}, {"common_name", n.CommonName}, {"organization", n.Organization},
		{"organizational_unit", n.OrganizationalUnit}, {"state", n.State}, {"locality", n.Locality}} {
		if err := checkText(f.field, f.v); err != nil {
			return err // in this order: a long name is reported as the name, not as the common name it defaults
		}
	}
	if n.Country != "" && (len(n.Country) != 2 || strings.ToUpper(n.Country) != n.Country || !isLetters(n.Country)) {
		return apperr.InvalidField("country", "must be a two-letter upper-case ISO 3166 code")
	}
	if n.Algorithm == "" {
		n.Algorithm = KeyECDSA
	}
	n.Algorithm = strings.ToUpper(n.Algorithm)
	sizes, ok := certs.KeySizes[n.Algorithm]
	if !ok {
		return apperr.InvalidField("algorithm", "must be ECDSA or RSA")
	}
	if n.KeySize == 0 {
		n.KeySize = sizes[0]
	}
	if !slices.Contains(sizes, n.KeySize) {
		return apperr.InvalidField("key_size", "must be one of %v for %s", sizes, n.Algorithm)
	}
	if n.ValidDays == 0 {
		n.ValidDays = DefaultValidDays
	}
	if n.ValidDays < 1 || n.ValidDays > MaxValidDays {
		return apperr.InvalidField("valid_days", "must be from 1 to %d", MaxValidDays)
	}
	return nil
}

func checkText(field, v string) error {
	if len(v) > maxText || !utf8.ValidString(v) || strings.ContainsAny(v, "\x00\r\n") {
		return apperr.InvalidField(field, "must be one line of text of at most %d bytes", maxText)
	}
	return nil
}

func isLetters(s string) bool {
	for _, r := range s {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

// Create makes a self-signed root CA for the user: a fresh key (sealed
// before it is stored) and its certificate, valid from now for ValidDays.
// Errors: Invalid naming the field; Conflict at MaxPerUser CAs.
func (s *Service) Create(ctx context.Context, userID int64, n NewCA) (CA, error) {
	if err := n.check(); err != nil {
		return CA{}, err
	}
	count, err := s.st.Increment(ctx, countKey(userID), 1, time.Time{})
	if err != nil {
		return CA{}, fmt.Errorf("cas: count the user's CAs: %w", err)
	}
	created := false
	defer func() {
		if !created {
			s.uncount(ctx, userID)
		}
	}()
	if count > int64(s.cfg.MaxPerUser) {
		return CA{}, apperr.New(apperr.Conflict, "a user has at most %d CAs", s.cfg.MaxPerUser)
	}
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "cas"}, 1, time.Time{})
	if err != nil {
		return CA{}, fmt.Errorf("cas: next CA id: %w", err)
	}
	now := s.now()
	c := CA{ID: id, UserID: userID, Name: n.Name, CommonName: n.CommonName, Organization: n.Organization,
		OrganizationalUnit: n.OrganizationalUnit, Country: n.Country, State: n.State, Locality: n.Locality,
		Algorithm: n.Algorithm, KeySize: n.KeySize, ValidDays: n.ValidDays, Status: StatusActive, CreatedAt: now, UpdatedAt: now}
	rec, err := s.selfSign(ctx, c)
	if err != nil {
		return CA{}, err
	}
	it, err := store.JSONItem(Key(userID, id), rec)
	if err != nil {
		return CA{}, err
	}
	if _, err := s.st.Put(ctx, it, store.IfAbsent); err != nil {
		return CA{}, fmt.Errorf("cas: create: %w", err)
	}
	created = true
	return rec.CA, nil
}

// uncount lowers the user's CA count; a failure only leaves it high, so
// it is logged.
func (s *Service) uncount(ctx context.Context, userID int64) {
	if _, err := s.st.Increment(context.WithoutCancel(ctx), countKey(userID), -1, time.Time{}); err != nil {
		s.cfg.Log.Error("cas: lowering the user's CA count failed; it stays high", "user", userID, "err", err)
	}
}

// selfSign makes c's key and certificate and seals the key.
func (s *Service) selfSign(ctx context.Context, c CA) (record, error) {
	var key crypto.Signer
	var err error
	if c.Algorithm == KeyRSA {
		key, err = rsa.GenerateKey(rand.Reader, c.KeySize)
	} else {
		curve := elliptic.P256()
		if c.KeySize == 384 {
			curve = elliptic.P384()
		}
		key, err = ecdsa.GenerateKey(curve, rand.Reader)
	}
	if err != nil {
		return record{}, fmt.Errorf("cas: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return record{}, fmt.Errorf("cas: serial: %w", err)
	}
	subject := pkix.Name{CommonName: c.CommonName}
	for _, f := range []struct {
		to *[]string
		v  string
	}{{&subject.Organization, c.Organization}, {&subject.OrganizationalUnit, c.OrganizationalUnit},
		{&subject.Country, c.Country}, {&subject.Province, c.State}, {&subject.Locality, c.Locality}} {
		if f.v != "" {
			*f.to = []string{f.v}
		}
	}
	c.NotBefore = c.CreatedAt.Add(-time.Hour) // clock skew on the devices
	c.NotAfter = c.CreatedAt.AddDate(0, 0, c.ValidDays)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return record{}, fmt.Errorf("cas: sign the CA certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return record{}, fmt.Errorf("cas: encode key: %w", err)
	}
	sealed, err := s.sealer.Seal(ctx, pkcs8, sealContext(c.UserID, c.ID))
	clear(pkcs8)
	if err != nil {
		return record{}, fmt.Errorf("cas: seal the CA key: %w", err)
	}
	c.SerialNumber = hex.EncodeToString(serial.Bytes())
	c.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return record{CA: c, SealedKey: sealed}, nil
}

// get reads the user's CA record with its item; a deleting one only when
// deleting is set. Errors: NotFound.
func (s *Service) get(ctx context.Context, userID, id int64, deleting bool) (record, store.Item, error) {
	var rec record
	it, err := store.GetJSON(ctx, s.st, Key(userID, id), &rec)
	if errors.Is(err, store.ErrNotFound) || (err == nil && rec.Status == statusDeleting && !deleting) {
		return record{}, store.Item{}, notFound(id)
	}
	if err != nil {
		return record{}, store.Item{}, fmt.Errorf("cas: read CA %d: %w", id, err)
	}
	return rec, it, nil
}

// Get returns the user's CA. Errors: NotFound (also for another user's).
func (s *Service) Get(ctx context.Context, userID, id int64) (CA, error) {
	rec, _, err := s.get(ctx, userID, id, false)
	return rec.CA, err
}

// Info is what an association needs of a CA: the CA and a transaction
// write that holds only while the CA is unchanged since it was read.
type Info struct {
	CA
	Check store.Write
}

// Info returns the user's CA with its check. Errors: NotFound.
func (s *Service) Info(ctx context.Context, userID, id int64) (Info, error) {
	rec, it, err := s.get(ctx, userID, id, false)
	if err != nil {
		return Info{}, err
	}
	return Info{CA: rec.CA, Check: store.CheckWrite(it.Key, store.IfVersion(it.Version))}, nil
}

// List returns the user's CAs by id, from offset on, at most limit (0
// means store.DefaultQueryLimit), with how many there are; allow, when
// set, keeps only the ids it allows. Errors are transient.
func (s *Service) List(ctx context.Context, userID int64, allow func(id int64) bool, offset, limit int) ([]CA, int, error) {
	if limit <= 0 {
		limit = store.DefaultQueryLimit
	}
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: caPrefix, Limit: store.MaxQueryLimit}
	keep := func(rec record) bool { return rec.Status != statusDeleting && (allow == nil || allow(rec.ID)) }
	out, total, err := store.PageJSON(ctx, s.st, q, keep, func(rec record) CA { return rec.CA }, max(offset, 0), limit)
	if err != nil {
		return nil, 0, fmt.Errorf("cas: list: %w", err)
	}
	return out, total, nil
}

// Update sets the name or the status (ACTIVE or INACTIVE) of the user's
// CA. Errors: NotFound; Invalid naming the field; Conflict when it
// changed concurrently (a retry is safe).
func (s *Service) Update(ctx context.Context, userID, id int64, ch Changes) (CA, error) {
	rec, it, err := s.get(ctx, userID, id, false)
	if err != nil {
		return CA{}, err
	}
	if ch.Name != nil {
		name := strings.TrimSpace(*ch.Name)
		if name == "" {
			return CA{}, apperr.InvalidField("name", "must not be empty")
		}
		if err := checkText("name", name); err != nil {
			return CA{}, err
		}
		rec.Name = name
	}
	if ch.Status != nil {
		st := strings.ToUpper(*ch.Status)
		if st != StatusActive && st != StatusInactive {
			return CA{}, apperr.InvalidField("status", "must be ACTIVE or INACTIVE")
		}
		rec.Status = st
	}
	rec.UpdatedAt = s.now()
	if err := s.put(ctx, rec, it.Version); err != nil {
		return CA{}, err
	}
	return rec.CA, nil
}

// put writes rec over the version read.
func (s *Service) put(ctx context.Context, rec record, version int64) error {
	next, err := store.JSONItem(Key(rec.UserID, rec.ID), rec)
	if err != nil {
		return err
	}
	_, err = s.st.Put(ctx, next, store.IfVersion(version))
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.Conflict, "CA %d changed meanwhile; try again", rec.ID)
	}
	if err != nil {
		return fmt.Errorf("cas: update CA %d: %w", rec.ID, err)
	}
	return nil
}

// Delete deletes the user's CA after taking it off every device
// (Config.OnDelete). Errors: NotFound; anything else is transient, and
// a retry finishes what was begun.
func (s *Service) Delete(ctx context.Context, userID, id int64) error {
	rec, it, err := s.get(ctx, userID, id, true)
	if err != nil {
		return err
	}
	if rec.Status != statusDeleting {
		rec.Status = statusDeleting
		rec.UpdatedAt = s.now()
		if err := s.put(ctx, rec, it.Version); err != nil {
			return err
		}
	}
	if s.cfg.OnDelete != nil {
		if err := s.cfg.OnDelete(ctx, userID, id); err != nil {
			return fmt.Errorf("cas: take CA %d off its devices: %w", id, err)
		}
	}
	err = s.st.Delete(ctx, Key(userID, id), store.IfExists)
	if errors.Is(err, store.ErrConditionFailed) {
		return nil // a concurrent Delete finished it (and uncounted it)
	}
	if err != nil {
		return fmt.Errorf("cas: delete CA %d: %w", id, err)
	}
	s.uncount(ctx, userID)
	return nil
}
