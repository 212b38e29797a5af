package certs

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/idna"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Name limits: RFC 1035 §2.3.4 (a label is at most 63 octets, a name at
// most 255 on the wire, which is 253 characters written without the final
// dot) and the 100 names per certificate that Let's Encrypt allows.
const (
	MaxNames       = 100
	MaxNameLength  = 253
	MaxLabelLength = 63
)

// NormalizeName returns a certificate name as records keep it: IDNA ASCII
// (UTS #46 lookup mapping, so "Bücher.example" is "xn--bcher-kva.example"),
// lower case, without a final dot, a leading "*." kept for a wildcard. The
// error (an apperr Invalid without a field) says what is wrong with the
// name for people; IP addresses are refused.
func NormalizeName(name string) (string, error) {
	n, _, err := normalizeName(name)
	if err != nil {
		return "", apperr.New(apperr.Invalid, "%s", err)
	}
	return n, nil
}

// normalizeName is NormalizeName that also says whether the name is a
// wildcard, with a plain error.
func normalizeName(raw string) (name string, wildcard bool, err error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", false, fmt.Errorf("a name is empty")
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return "", false, fmt.Errorf("%q is an IP address; certificates here are for domain names", ip)
	}
	s = strings.TrimSuffix(s, ".")
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		wildcard, s = true, rest
	}
	if strings.Contains(s, "*") {
		return "", false, fmt.Errorf("%q: a wildcard \"*\" may only be the whole leftmost label (\"*.example.com\")", raw)
	}
	ascii, err := idna.Lookup.ToASCII(s)
	if err != nil {
		return "", false, fmt.Errorf("%q is not a valid domain name (%v)", raw, err)
	}
	ascii = strings.ToLower(ascii)
	name = ascii
	if wildcard {
		name = "*." + ascii
	}
	if len(name) > MaxNameLength {
		return "", false, fmt.Errorf("%q is %d characters long as ASCII; a name has at most %d", raw, len(name), MaxNameLength)
	}
	labels := strings.Split(ascii, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "", false, fmt.Errorf("%q has an empty label", raw)
		case len(l) > MaxLabelLength:
			return "", false, fmt.Errorf("%q has a label of %d characters (%.20s...); a label has at most %d", raw, len(l), l, MaxLabelLength)
		case l[0] == '-' || l[len(l)-1] == '-':
			return "", false, fmt.Errorf("%q has a label that starts or ends with a hyphen", raw)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", false, fmt.Errorf("%q has a character other than letters, digits and hyphens", raw)
			}
		}
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return "", false, fmt.Errorf("%q ends in a numeric label, like an IP address; certificates here are for domain names", raw)
	}
	return name, wildcard, nil
}

// NormalizeNames validates a certificate's names for validation method
// and returns the primary name and the full list: every name normalized
// (NormalizeName), domainName first unless sans lists it elsewhere,
// sans's order kept. An empty domainName means sans[0]. Errors are apperr
// Invalid naming the field ("domain_name", "sans" or "sans[i]") and the
// bad name: an invalid name or an IP address, more than MaxNames names, a
// duplicate (after normalization), a wildcard without DNS-01 validation,
// or a name a wildcard in the list already covers.
func NormalizeNames(domainName string, sans []string, method string) (string, []string, error) {
	if len(sans) > MaxNames {
		return "", nil, apperr.InvalidField("sans", "lists %d names; a certificate has at most %d", len(sans), MaxNames)
	}
	domainField := "domain_name"
	if strings.TrimSpace(domainName) == "" {
		if len(sans) == 0 {
			return "", nil, apperr.InvalidField("domain_name", "is required")
		}
		domainName, domainField = sans[0], "sans[0]"
	}
	primary, primaryWild, err := normalizeName(domainName)
	if err != nil {
		return "", nil, apperr.InvalidField(domainField, "%s", err)
	}
	dnsOK := methodChallenge[method] == ChallengeDNS01
	if primaryWild && !dnsOK {
		return "", nil, apperr.InvalidField(domainField, "%q is a wildcard name, which needs DNS-01 validation (challenge_type \"dns-01\")", domainName)
	}
	type entry struct {
		field, raw string
		wild       bool
	}
	seen := map[string]entry{}
	var names []string
	for i, raw := range sans {
		field := fmt.Sprintf("sans[%d]", i)
		n, wild, err := normalizeName(raw)
		if err != nil {
			return "", nil, apperr.InvalidField(field, "%s", err)
		}
		if prev, dup := seen[n]; dup {
			return "", nil, apperr.InvalidField(field, "%q is the same name as %s %q", raw, prev.field, prev.raw)
		}
		if wild && !dnsOK {
			return "", nil, apperr.InvalidField(field, "%q is a wildcard name, which needs DNS-01 validation (challenge_type \"dns-01\")", raw)
		}
		seen[n] = entry{field: field, raw: raw, wild: wild}
		names = append(names, n)
	}
	if _, listed := seen[primary]; !listed {
		if len(names) >= MaxNames {
			return "", nil, apperr.InvalidField("sans", "with domain_name %q added there are %d names; a certificate has at most %d", primary, len(names)+1, MaxNames)
		}
		names = append([]string{primary}, names...)
		seen[primary] = entry{field: domainField, raw: domainName, wild: primaryWild}
	}
	// A CA refuses a name that a wildcard of the same order covers.
	for _, n := range names {
		_, parent, ok := strings.Cut(n, ".")
		if !ok || strings.HasPrefix(n, "*.") {
			continue
		}
		if w, covered := seen["*."+parent]; covered {
			e := seen[n]
			return "", nil, apperr.InvalidField(e.field, "%q is already covered by the wildcard %s %q; list one or the other", e.raw, w.field, w.raw)
		}
	}
	return primary, names, nil
}

// DelegationTarget is where dns-01-delegation writes the TXT record of
// one of the user's names (a wildcard's is its apex's): the name the
// user's "_acme-challenge.<domain>" CNAME must point at, in certfleet's
// validation zone. It is fixed per user and name, so one CNAME serves
// every renewal; another user's name never maps to the same target.
func DelegationTarget(zone string, userID int64, domain string) string {
	domain = strings.TrimPrefix(domain, "*.")
	sum := sha256.Sum256([]byte(strconv.FormatInt(userID, 10) + "\x00" + domain))
	label := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
	return "_acme-challenge." + label + "." + strings.TrimSuffix(strings.TrimPrefix(zone, "."), ".")
}
