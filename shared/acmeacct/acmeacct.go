// Package acmeacct is ACME accounts and the CA providers they belong to:
// one domain service behind both dialects that describe them (seed 000's
// /apiv1/users/:user_id/acme-accounts and seed 004's /api/v1/acme/*).
//
// The rules (seed 004) are the service's, so every dialect gets them: one
// account per (provider, email) per user; exactly one default per provider
// per user, switched in one transaction; only an active account becomes
// default; the default cannot be disabled or deleted; an account that
// certificates or certificate requests reference cannot be deleted; enable
// and disable are idempotent; delete is physical.
//
// Registration with the CA never runs in a request: Create stores the
// account as pending and queues a KindRegister step, which the worker runs
// through the CA port (package acme, the only lego importer).
package acmeacct

import (
	"context"
	"crypto"
	"time"
)

// Tables the service keeps its records in.
const (
	Table        = "acme"
	CounterTable = "meta"
)

// Account statuses.
const (
	StatusPending  = "pending"
	StatusActive   = "active"
	StatusDisabled = "disabled"
	// StatusFailed: the CA refused the registration; LastError says why.
	StatusFailed = "failed"
)

// Provider is a CA that accounts can be registered with.
type Provider struct {
	ID           int64          `json:"id"`
	Name         string         `json:"name"`
	Title        string         `json:"title"`
	DirectoryURL string         `json:"directoryUrl"`
	RequiresEAB  bool           `json:"requiresEab"`
	Status       string         `json:"status"`
	Meta         *DirectoryMeta `json:"meta,omitempty"`
	CreatedAt    time.Time      `json:"createdAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
}

// DirectoryMeta is the "meta" object of a CA's ACME directory (RFC 8555
// §7.1.1, profiles per draft-ietf-acme-profiles), as last read.
type DirectoryMeta struct {
	TermsOfService          string            `json:"termsOfService,omitempty"`
	Website                 string            `json:"website,omitempty"`
	CAAIdentities           []string          `json:"caaIdentities,omitempty"`
	ExternalAccountRequired bool              `json:"externalAccountRequired"`
	Profiles                map[string]string `json:"profiles,omitempty"`
	FetchedAt               time.Time         `json:"fetchedAt"`
}

// Account is an ACME account as its owner sees it (never its key or EAB
// HMAC key).
type Account struct {
	ID           int64     `json:"id"`
	UserID       int64     `json:"userId"`
	ProviderID   int64     `json:"providerId"`
	ProviderName string    `json:"providerName"`
	Email        string    `json:"email"`
	Status       string    `json:"status"`
	IsDefault    bool      `json:"isDefault"`
	AccountURL   string    `json:"accountUrl"`
	EABKid       string    `json:"eabKid,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

// NewAccount is what creating an account takes.
type NewAccount struct {
	ProviderName string
	Email        string
	EABKid       string
	EABHMACKey   string
}

// Filter narrows a listing; zero fields do not filter.
type Filter struct {
	ProviderID int64
	Status     string
	// EmailContains matches a case-insensitive substring of the email.
	EmailContains string
}

// Registration is what the CA port needs to register (or find) an
// account.
type Registration struct {
	DirectoryURL string
	Email        string
	Key          crypto.Signer
	EABKid       string
	// EABHMACKey is base64url, as CAs hand it out.
	EABHMACKey string
}

// CA is the port to ACME servers, implemented by package acme.
type CA interface {
	// Directory reads a CA's directory meta.
	Directory(ctx context.Context, directoryURL string) (DirectoryMeta, error)
	// Register creates the account, or finds the existing one for the
	// same key, agreeing to the terms of service, and returns its URL.
	// A refusal by the CA is a *Problem; other errors are transient.
	Register(ctx context.Context, r Registration) (accountURL string, err error)
}

// Problem is an ACME problem document the CA answered with: a permanent
// refusal, not worth retrying.
type Problem struct {
	Type   string
	Detail string
	Status int
}

func (p *Problem) Error() string { return p.Type + ": " + p.Detail }

// KindRegister is the queue message kind of the registration step.
const KindRegister = "acme.register"
