package app

import "github.com/certfleet/certfleet/shared/store"

// Tables is every table certfleet uses, by logical name. template.yaml and
// localstack/init declare the same tables (physical name = prefix + name)
// with the same indexes; localstack's drift test compares all three.
//
// Each table has string keys "pk" and "sk"; an index named X has string keys
// "Xpk" and "Xsk" and projects all attributes.
var Tables = []store.TableSpec{
	// meta holds id counters and other small control records.
	{Name: "meta", Indexes: []string{"gsi1"}},
	// identity holds users, their unique emails and names, sessions, API
	// keys, one-time tokens, device refresh tokens and the token signing
	// key; gsi1 lists a user's keys and all users for admins.
	{Name: "identity", Indexes: []string{"gsi1"}},
	// ratelimit holds fixed-window request and login-failure counters,
	// which expire.
	{Name: "ratelimit"},
	// acme holds ACME accounts per user with their uniqueness, default and
	// reference items, and CA providers added by admins.
	{Name: "acme"},
	// certs holds certificate records per user and each user's certificate
	// count; gsi1 lists a user's certificates per ACME account, gsi2 lists
	// certificates by renewal time.
	{Name: "certs", Indexes: []string{"gsi1", "gsi2"}},
	// issuance holds issues per user and certificate, each certificate's
	// active-issue marker, HTTP-01 and TLS-ALPN-01 answers, which expire,
	// and each user's event log (package events), which expires too.
	{Name: "issuance"},
	// devices holds users' devices (their X25519 public keys) with the
	// uniqueness of each device_public_id per user.
	{Name: "devices"},
}
