// Package certs is certificates: the records that say which names a user
// wants a certificate for, from which ACME account, with which key and
// validation method and under which key distribution policy. One domain
// service serves every dialect that describes certificates (seed 000's
// /apiv1/users/:user_id/certificates, and later seeds 001 and 002).
//
// This package keeps the records only; issuing them (orders, challenges,
// keys, renewal) is the step machine's (package issuance), which reads
// and updates records through this service. No record holds a secret yet;
// private keys, once issued, are stored only sealed (design.md, Secrets).
//
// Rules: names are validated and kept in IDNA ASCII, lower case (see
// NormalizeNames); the ACME account must be one of the user's that is not
// disabled or failed, and the account counts the certificates that use it
// (acmeacct.Service.Reference), so it cannot be deleted under them;
// dns-01-provider names one of the user's DNS providers (package dnsprov),
// which is not counted: deleting it makes the certificate's issues fail
// until it names another; dns-01-delegation needs the server's delegation
// zone (Config.DelegationZone); delete is physical.
package certs

import (
	"context"
	"time"

	"github.com/certfleet/certfleet/shared/acmeacct"
)

// Tables the service keeps its records in.
const (
	Table        = "certs"
	CounterTable = "meta"
)

// Secondary indexes of Table (declared with the table, see
// shared/app/tables.go).
const (
	// IndexByAccount lists a user's certificates per ACME account:
	// PK "acct#<user id>#<account id>", SK "cert#<019d certificate id>".
	IndexByAccount = "gsi1"
	// IndexByRenewal lists certificates by when they are due for renewal:
	// PK "renew", SK "<renew_at as 20060102T150405Z>#<019d certificate id>".
	// Only certificates with a renew_at have an entry; none has one until
	// the step machine stores the first issued certificate.
	IndexByRenewal = "gsi2"
)

// Key algorithms and their sizes (bits for RSA, curve size for ECDSA).
const (
	KeyECDSA = "ECDSA"
	KeyRSA   = "RSA"
)

// KeySizes are the key sizes allowed per algorithm, the default first.
var KeySizes = map[string][]int{
	KeyECDSA: {256, 384},
	KeyRSA:   {2048, 3072, 4096},
}

// Key distribution policies (cert-ctrl device protocol §3.5).
const (
	// PolicyHybrid: each device gets the key wrapped to its own public key
	// and a master-wrapped copy is kept server-side. The default.
	PolicyHybrid = "HYBRID"
	// PolicyMasterOnly: no device wraps; devices and exports get the key
	// decrypted by the server, and only when ServerDecryptExport is set.
	PolicyMasterOnly = "MASTER_ONLY"
	// PolicyDeviceRequired: per-device wraps are mandatory and the server
	// never hands out a decrypted key, so ServerDecryptExport must be off.
	PolicyDeviceRequired = "DEVICE_REQUIRED"
)

// Policies lists the key distribution policies, the default first.
var Policies = []string{PolicyHybrid, PolicyMasterOnly, PolicyDeviceRequired}

// ACME challenge types, the default first.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// ChallengeTypes lists the challenge types, the default first.
var ChallengeTypes = []string{ChallengeHTTP01, ChallengeDNS01, ChallengeTLSALPN01}

// Validation methods: how a challenge type is answered.
const (
	MethodHTTP01 = "http-01"
	// MethodDNS01Provider writes the TXT record through the user's DNS
	// provider credentials.
	MethodDNS01Provider = "dns-01-provider"
	// MethodDNS01Delegation writes it into certfleet's delegation zone,
	// behind the customer's _acme-challenge CNAME.
	MethodDNS01Delegation = "dns-01-delegation"
	MethodTLSALPN01       = "tls-alpn-01"
)

// methodChallenge maps each validation method to its challenge type.
var methodChallenge = map[string]string{
	MethodHTTP01:          ChallengeHTTP01,
	MethodDNS01Provider:   ChallengeDNS01,
	MethodDNS01Delegation: ChallengeDNS01,
	MethodTLSALPN01:       ChallengeTLSALPN01,
}

// defaultMethod is the validation method a bare challenge type means.
var defaultMethod = map[string]string{
	ChallengeHTTP01:    MethodHTTP01,
	ChallengeDNS01:     MethodDNS01Provider,
	ChallengeTLSALPN01: MethodTLSALPN01,
}

// Certificate statuses.
const (
	// StatusNew: created, never issued. The names, key and validation of
	// a certificate can change only while it is new.
	StatusNew = "new"
	// StatusIssued: the certificate has been issued at least once.
	StatusIssued = "issued"
	// StatusRevoked: its certificate was revoked; it is not renewed.
	StatusRevoked = "revoked"
)

// Validation says how the names are proven to the CA. It is one field so
// that the method's settings (DNS provider, delegation zone) join it later
// without reshaping the record.
type Validation struct {
	// Method is one of the Method* constants.
	Method string `json:"method"`
	// DNSProviderID is the user's stored DNS provider credentials that
	// dns-01-provider writes the TXT records with (package dnsprov); 0
	// for every other method.
	DNSProviderID int64 `json:"dns_provider_id,omitempty"`
}

// Certificate is a certificate record as its owner sees it.
type Certificate struct {
	ID         int64  `json:"id"`
	UserID     int64  `json:"user_id"`
	DomainName string `json:"domain_name"`
	// SANs is every name of the certificate, DomainName included.
	SANs []string `json:"sans"`
	// AcctID is the ACME account that orders the certificate.
	AcctID       int64  `json:"acct_id"`
	KeyAlgorithm string `json:"key_algorithm"`
	KeySize      int    `json:"key_size"`
	// Policy is the key distribution policy (Policy* constants).
	Policy        string     `json:"policy"`
	ChallengeType string     `json:"challenge_type"`
	Validation    Validation `json:"validation"`
	// ServerDecryptExport allows the server to hand out the decrypted key
	// (export, MASTER_ONLY devices); never with DEVICE_REQUIRED.
	ServerDecryptExport bool   `json:"server_decrypt_export"`
	Status              string `json:"status"`
	// IssueID is the issue that issued the current certificate; 0 until
	// the first one.
	IssueID int64 `json:"issue_id,omitempty"`
	// RenewAt and NotAfter are zero until the certificate is issued.
	RenewAt   time.Time `json:"renew_at,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// NewCertificate is what creating a certificate takes. Empty fields take
// their defaults: ECDSA P-256, HYBRID, http-01.
type NewCertificate struct {
	// DomainName is the primary name; empty means the first of SANs.
	DomainName string
	// SANs lists the certificate's names; DomainName is added in front
	// when it is missing. Empty means DomainName alone.
	SANs         []string
	AcctID       int64
	KeyAlgorithm string
	// KeySize 0 means the algorithm's default (256 for ECDSA, 2048 for RSA).
	KeySize int
	Policy  string
	// ChallengeType and ValidationMethod must agree when both are given;
	// either one alone determines the other (dns-01 alone means
	// dns-01-provider).
	ChallengeType    string
	ValidationMethod string
	// DNSProviderID is one of the user's DNS providers, required with
	// dns-01-provider and refused with every other method.
	DNSProviderID       int64
	ServerDecryptExport bool
}

// Changes is an update of a certificate; nil fields stay as they are.
// Names, key and validation can change only while the certificate is new;
// the ACME account, policy and export flag can change at any time.
type Changes struct {
	// DomainName alone replaces the primary name in SANs; SANs alone keeps
	// the primary name if it is still listed, else takes the first.
	DomainName       *string
	SANs             *[]string
	AcctID           *int64
	KeyAlgorithm     *string
	KeySize          *int
	Policy           *string
	ChallengeType    *string
	ValidationMethod *string
	// DNSProviderID names another of the user's DNS providers; a method
	// other than dns-01-provider drops the certificate's.
	DNSProviderID       *int64
	ServerDecryptExport *bool
}

// Filter narrows a listing.
type Filter struct {
	// Allow, when set, keeps only the certificates whose id it accepts
	// (e.g. those an API key may read).
	Allow func(id int64) bool
}

// Accounts is the ACME account service as certificates use it
// (acmeacct.Service).
type Accounts interface {
	// Get returns one of the user's accounts; another user's or a missing
	// one is an apperr NotFound.
	Get(ctx context.Context, userID, id int64) (acmeacct.Account, error)
	// Reference adds delta to the account's count of certificates; +1 on
	// a disabled or failed account is an apperr Conflict, a missing one
	// NotFound.
	Reference(ctx context.Context, userID, id int64, kind acmeacct.RefKind, delta int) error
}

var _ Accounts = (*acmeacct.Service)(nil)

// DNSProviders is the user's DNS provider credentials as certificates use
// them (dnsprov.Service).
type DNSProviders interface {
	// Exists returns nil when id is one of the user's DNS providers;
	// another user's or a missing one is an apperr NotFound.
	Exists(ctx context.Context, userID, id int64) error
}
