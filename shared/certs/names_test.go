package certs_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
)

func label(c byte, n int) string { return strings.Repeat(string(c), n) }

// nameOf returns a name of exactly n characters made of 63-character labels.
func nameOf(n int) string {
	var parts []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 { // avoid a last label of length 0 after the dot
			l--
		}
		parts = append(parts, label('a'+byte(len(parts)), l))
		n -= l
		if n > 0 {
			n-- // the dot
		}
	}
	return strings.Join(parts, ".")
}

func TestNormalizeNames(t *testing.T) {
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("h%d.example.com", i)
		}
		return out
	}
	if len(nameOf(253)) != 253 || len(nameOf(254)) != 254 {
		t.Fatal("nameOf is wrong")
	}
	cases := []struct {
		name        string
		domain      string
		sans        []string
		method      string
		wantDomain  string
		wantSANs    []string
		errField    string
		errContains string
	}{
		{name: "seed example", domain: "example.com", sans: []string{"example.com", "www.example.com"},
			wantDomain: "example.com", wantSANs: []string{"example.com", "www.example.com"}},
		{name: "IDNA to ASCII", domain: "bücher.example",
			wantDomain: "xn--bcher-kva.example", wantSANs: []string{"xn--bcher-kva.example"}},
		{name: "IDNA upper case and full stop", domain: "BÜCHER.Example.",
			wantDomain: "xn--bcher-kva.example", wantSANs: []string{"xn--bcher-kva.example"}},
		{name: "A-label kept", domain: "XN--BCHER-KVA.example",
			wantDomain: "xn--bcher-kva.example", wantSANs: []string{"xn--bcher-kva.example"}},
		{name: "domain added in front", domain: "Example.com", sans: []string{"www.example.com"},
			wantDomain: "example.com", wantSANs: []string{"example.com", "www.example.com"}},
		{name: "domain from sans", sans: []string{"b.example", "a.example"},
			wantDomain: "b.example", wantSANs: []string{"b.example", "a.example"}},
		{name: "order of sans kept", domain: "a.example", sans: []string{"b.example", "a.example"},
			wantDomain: "a.example", wantSANs: []string{"b.example", "a.example"}},
		{name: "wildcard with dns-01", domain: "example.com", sans: []string{"example.com", "*.Example.com"}, method: certs.MethodDNS01Provider,
			wantDomain: "example.com", wantSANs: []string{"example.com", "*.example.com"}},
		{name: "wildcard domain with delegation", domain: "*.example.com", method: certs.MethodDNS01Delegation,
			wantDomain: "*.example.com", wantSANs: []string{"*.example.com"}},
		{name: "63-character label", domain: label('x', 63) + ".example",
			wantDomain: label('x', 63) + ".example", wantSANs: []string{label('x', 63) + ".example"}},
		{name: "253-character name", domain: nameOf(253), wantDomain: nameOf(253), wantSANs: []string{nameOf(253)}},
		{name: "100 names", domain: "h0.example.com", sans: many(100), wantDomain: "h0.example.com", wantSANs: many(100)},

		{name: "wildcard with http-01", domain: "example.com", sans: []string{"*.example.com"}, method: certs.MethodHTTP01,
			errField: "sans[0]", errContains: `"*.example.com" is a wildcard name, which needs DNS-01`},
		{name: "wildcard domain with tls-alpn-01", domain: "*.example.com", method: certs.MethodTLSALPN01,
			errField: "domain_name", errContains: `"*.example.com" is a wildcard`},
		{name: "wildcard not leftmost", domain: "www.*.example.com", method: certs.MethodDNS01Provider,
			errField: "domain_name", errContains: `"www.*.example.com": a wildcard "*" may only be the whole leftmost label`},
		{name: "partial wildcard label", domain: "example.com", sans: []string{"w*.example.com"}, method: certs.MethodDNS01Provider,
			errField: "sans[0]", errContains: `"w*.example.com"`},
		{name: "bare star", sans: []string{"*"}, method: certs.MethodDNS01Provider, errField: "sans[0]", errContains: `"*"`},
		{name: "name covered by a wildcard", domain: "example.com", sans: []string{"*.example.com", "WWW.example.com"}, method: certs.MethodDNS01Provider,
			errField: "sans[1]", errContains: `"WWW.example.com" is already covered by the wildcard sans[0] "*.example.com"`},
		{name: "101 names", domain: "h0.example.com", sans: many(101), errField: "sans", errContains: "101 names"},
		{name: "100 names without the domain", domain: "other.example.com", sans: many(100), errField: "sans", errContains: "101 names"},
		{name: "64-character label", domain: "example.com", sans: []string{label('x', 64) + ".example.com"},
			errField: "sans[0]", errContains: "label of 64 characters"},
		{name: "254-character name", domain: nameOf(254), errField: "domain_name", errContains: "254 characters"},
		{name: "IPv4 literal", domain: "example.com", sans: []string{"example.com", "192.0.2.1"},
			errField: "sans[1]", errContains: `"192.0.2.1" is an IP address`},
		{name: "IPv6 literal", domain: "2001:DB8::1", errField: "domain_name", errContains: `"2001:db8::1" is an IP address`},
		{name: "bracketed IPv6", sans: []string{"[::1]"}, errField: "sans[0]", errContains: "IP address"},
		{name: "numeric top label", domain: "10.1.2", errField: "domain_name", errContains: "numeric label"},
		{name: "duplicate after lower-casing", domain: "example.com", sans: []string{"www.example.com", "WWW.Example.COM"},
			errField: "sans[1]", errContains: `"WWW.Example.COM" is the same name as sans[0] "www.example.com"`},
		{name: "duplicate after IDNA", sans: []string{"xn--bcher-kva.example", "Bücher.example"},
			errField: "sans[1]", errContains: "same name as sans[0]"},
		{name: "empty everything", errField: "domain_name", errContains: "required"},
		{name: "blank domain", domain: "   ", errField: "domain_name", errContains: "required"},
		{name: "empty name in sans", domain: "example.com", sans: []string{"example.com", ""}, errField: "sans[1]", errContains: "empty"},
		{name: "empty label", domain: "a..example.com", errField: "domain_name", errContains: "empty label"},
		{name: "leading hyphen", domain: "-a.example.com", errField: "domain_name", errContains: `"-a.example.com"`},
		{name: "underscore", domain: "under_score.example.com", errField: "domain_name", errContains: "not a valid domain name"},
		{name: "space inside", domain: "exa mple.com", errField: "domain_name", errContains: "not a valid domain name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = certs.MethodHTTP01
			}
			domain, sans, err := certs.NormalizeNames(c.domain, c.sans, method)
			if c.errField == "" {
				if err != nil {
					t.Fatal(err)
				}
				if domain != c.wantDomain || !slices.Equal(sans, c.wantSANs) {
					t.Fatalf("got %q %q, want %q %q", domain, sans, c.wantDomain, c.wantSANs)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != apperr.Invalid {
				t.Fatalf("got %q %q %v, want an Invalid error", domain, sans, err)
			}
			if ae.Field != c.errField || !strings.Contains(ae.Message, c.errContains) {
				t.Fatalf("error field %q message %q; want field %q mentioning %q", ae.Field, ae.Message, c.errField, c.errContains)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"bücher.example": "xn--bcher-kva.example",
		"ＥＸＡＭＰＬＥ．com":    "example.com", // full-width letters and dot map (UTS #46)
		" example.com ":  "example.com",
		"*.例え.jp":        "*.xn--r8jz45g.jp",
	} {
		got, err := certs.NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := certs.NormalizeName("192.0.2.1"); apperr.CodeOf(err) != apperr.Invalid {
		t.Errorf("an IP address: %v", err)
	}
}
