package dnsprov_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/dnsprov"
)

// TestCatalogUpToDate regenerates the catalog from the lego version in
// go.mod and fails when catalog.json differs: run `go generate
// ./shared/dnsprov` after changing lego's version.
func TestCatalogUpToDate(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to regenerate the catalog: %v", err)
	}
	out := filepath.Join(t.TempDir(), "catalog.json")
	cmd := exec.Command(goBin, "run", "./internal/gencatalog", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gencatalog: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		var g, w struct{ Lego string }
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal(want, &w)
		t.Fatalf("catalog.json (lego %s) is out of date with go.mod (lego %s): run go generate ./shared/dnsprov", g.Lego, w.Lego)
	}
	var cat struct {
		Lego      string
		Providers []struct{ Code string }
	}
	if err := json.Unmarshal(got, &cat); err != nil {
		t.Fatal(err)
	}
	if cat.Lego != dnsprov.LegoVersion() || !strings.HasPrefix(cat.Lego, "v4.") || len(cat.Providers) < 150 {
		t.Fatalf("catalog: lego %q (package says %q), %d providers", cat.Lego, dnsprov.LegoVersion(), len(cat.Providers))
	}
}

func TestCatalog(t *testing.T) {
	cat := dnsprov.Catalog()
	codes := make([]string, len(cat))
	for i, e := range cat {
		codes[i] = e.Code
	}
	if !sort.StringsAreSorted(codes) || len(cat) < 150 {
		t.Fatalf("%d providers, sorted: %v", len(cat), sort.StringsAreSorted(codes))
	}
	// Never configurable: programs, people, and providers that only read
	// files on the server.
	for _, code := range []string{"exec", "manual", "transip", "oraclecloud", "hyperone"} {
		if slices.Contains(codes, code) {
			t.Errorf("%s is in the catalog", code)
		}
		if _, ok := dnsprov.Lookup(code); ok {
			t.Errorf("Lookup(%s) found it", code)
		}
	}
	for _, e := range cat {
		if e.Name == "" || len(e.Required) == 0 {
			t.Errorf("%s: name %q, required %v", e.Code, e.Name, e.Required)
		}
		names := map[string]bool{}
		for _, s := range append(slices.Clone(e.Credentials), e.Additional...) {
			names[s.Env] = true
			if strings.HasSuffix(s.Env, "_FILE") || strings.HasSuffix(s.Env, "_PATH") {
				t.Errorf("%s lists the refused setting %s", e.Code, s.Env)
			}
		}
		for _, set := range e.Required {
			for _, k := range set {
				if !names[k] {
					t.Errorf("%s requires %s, which it does not list", e.Code, k)
				}
			}
		}
	}
	cf, ok := dnsprov.Lookup("cloudflare")
	if !ok || cf.Name != "Cloudflare" || !slices.EqualFunc(cf.Required, [][]string{{"CF_DNS_API_TOKEN"}, {"CF_API_EMAIL", "CF_API_KEY"}}, slices.Equal) {
		t.Fatalf("cloudflare: %+v", cf)
	}
	if !slices.ContainsFunc(cf.Credentials, func(s dnsprov.Setting) bool { return s.Env == "CF_DNS_API_TOKEN" && s.Description != "" }) {
		t.Fatalf("cloudflare credentials: %+v", cf.Credentials)
	}
	// The default rule: every credential but aliases, optional and
	// refused ones.
	ali, _ := dnsprov.Lookup("alidns")
	if !slices.EqualFunc(ali.Required, [][]string{{"ALICLOUD_ACCESS_KEY", "ALICLOUD_SECRET_KEY"}}, slices.Equal) {
		t.Fatalf("alidns required: %v", ali.Required)
	}
	// Lookup hands out copies.
	cf.Required[0][0] = "changed"
	if again, _ := dnsprov.Lookup("cloudflare"); again.Required[0][0] != "CF_DNS_API_TOKEN" {
		t.Fatal("Lookup shares the catalog's slices")
	}
}

// TestPolicyTablesMatchTheCatalog: every name the hand-written policy
// tables mention is one lego lists, so a lego upgrade that renames one
// fails here instead of silently loosening a rule.
func TestPolicyTablesMatchTheCatalog(t *testing.T) {
	for code, sets := range dnsprov.CredentialSets {
		for _, set := range sets {
			for _, k := range set {
				if !dnsprov.Known(code, k) || dnsprov.Refusal(k) != "" {
					t.Errorf("credentialSets[%s] names %s: known %v, refusal %q", code, k, dnsprov.Known(code, k), dnsprov.Refusal(k))
				}
			}
		}
	}
	for code := range dnsprov.Unusable {
		if !slices.Contains(rawCodes(t), code) {
			t.Errorf("unusable provider %s is no longer in lego", code)
		}
	}
	for name := range dnsprov.RefusedNames {
		found := false
		for _, e := range []string{"edgedns", "route53", "oraclecloud", "hyperone", "alidns", "aliesa", "azuredns"} {
			found = found || dnsprov.Known(e, name)
		}
		if !found {
			t.Errorf("refused name %s is no longer a lego setting", name)
		}
	}
}

// rawCodes lists every provider code of catalog.json.
func rawCodes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	var cat struct{ Providers []struct{ Code string } }
	if err := json.Unmarshal(b, &cat); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, p := range cat.Providers {
		codes = append(codes, p.Code)
	}
	return codes
}
