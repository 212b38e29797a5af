// Package shared_test holds the architecture checks of design.md: domain
// and edge packages stay free of AWS, bbolt and lego, and Lambda mains stay
// thin.
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
	"keys/local", "keys/kms", "mail", "acme",
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

func TestOnlyAdaptersImportInfrastructure(t *testing.T) {
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

func TestLambdaMainsAreThin(t *testing.T) {
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
			if strings.HasPrefix(p, "github.com/certfleet/certfleet/") && p != "github.com/certfleet/certfleet/shared/app" {
				t.Errorf("%s imports %s: wiring belongs in shared/app", m, p)
			}
		}
	}
}
