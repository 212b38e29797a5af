// Package shared_test holds the architecture checks of design.md: domain
// and edge packages stay free of AWS, bbolt and lego, lego's DNS providers
// stay in shared/dns01, and Lambda mains stay thin.
package shared_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// adapters may import infrastructure SDKs; nothing else under shared/ may.
var adapters = []string{
	"app", "store/bolt", "store/dynamo", "queue/local", "queue/sqs",
	"keys/local", "keys/kms", "mail", "acme", "dns01",
}

var infrastructure = []string{"github.com/aws/aws-sdk-go-v2", "go.etcd.io/bbolt", "github.com/go-acme/lego"}

func isAdapter(dir string) bool {
	for _, a := range adapters {
		if dir == a || strings.HasPrefix(dir, a+"/") {
			return true
		}
	}
	return false
}

func TestArchOnlyAdaptersImportInfrastructure(t *testing.T) {
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		if isAdapter(filepath.ToSlash(filepath.Dir(path))) {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, infra := range infrastructure {
				if strings.HasPrefix(p, infra) {
					t.Errorf("shared/%s imports %s: only adapters and shared/app may (design.md)", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d files; is the walk rooted at shared/?", checked)
	}
}

// legoProviders is lego's DNS providers: some two hundred packages, each
// reading credentials from the environment, used only by shared/dns01.
const legoProviders = "github.com/go-acme/lego/v4/providers/dns"

func TestArchOnlyDNS01ImportsLegoProviders(t *testing.T) {
	checked := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != ".." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		if filepath.ToSlash(filepath.Dir(path)) == "../shared/dns01" {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == legoProviders || strings.HasPrefix(p, legoProviders+"/") {
				t.Errorf("%s imports %s: only shared/dns01 may (design.md)", filepath.ToSlash(path), p)
			}
			// dns01 links the providers: only the binaries that run the
			// worker (and tests) may import it.
			if p == dns01Package && dir != "../functions/worker" && dir != "../cmd/certfleet" && !strings.HasSuffix(path, "_test.go") {
				t.Errorf("%s imports %s: only the worker function and the local server link the DNS providers", filepath.ToSlash(path), p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d files; is the walk rooted at the module?", checked)
	}
}

// dns01Package links lego's ~195 DNS providers into whatever imports it.
const dns01Package = "github.com/certfleet/certfleet/shared/dns01"

func TestArchLambdaMainsAreThin(t *testing.T) {
	mains, err := filepath.Glob("../functions/*/main.go")
	if err != nil || len(mains) == 0 {
		t.Fatalf("no Lambda mains found: %v", err)
	}
	for _, m := range mains {
		src, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		code := 0
		for _, line := range strings.Split(string(src), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "//") {
				code++
			}
		}
		if code > 20 {
			t.Errorf("%s has %d lines of code: a Lambda main only calls shared/app and starts the handler", m, code)
		}
		f, err := parser.ParseFile(token.NewFileSet(), m, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			// The worker alone links lego's DNS providers: it hands
			// dns01.Solvers to shared/app (app.WithDNS01).
			dnsWorker := p == dns01Package && filepath.Base(filepath.Dir(m)) == "worker"
			if strings.HasPrefix(p, "github.com/certfleet/certfleet/") && p != "github.com/certfleet/certfleet/shared/app" && !dnsWorker {
				t.Errorf("%s imports %s: wiring belongs in shared/app", m, p)
			}
		}
	}
}
