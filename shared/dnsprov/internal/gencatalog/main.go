// Command gencatalog writes shared/dnsprov/catalog.json: the DNS providers
// of the lego version in go.mod, read from the TOML descriptors lego keeps
// beside each provider (providers/dns/<name>/<name>.toml), so that no
// certfleet binary but the worker links lego's providers.
//
// Run it with `go generate ./shared/dnsprov`; it runs in that directory.
//
//	go run ./internal/gencatalog [-o catalog.json]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// legoModule is the module whose descriptors are read.
const legoModule = "github.com/go-acme/lego/v4"

// excluded are providers no user may configure, whatever lego offers.
var excluded = map[string]string{
	"exec":   "runs a program on the server",
	"manual": "waits for a person to create the record by hand",
}

// envName is what a setting's name must look like to be an environment
// variable; descriptor keys that are prose ("instance metadata service")
// are left out.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Catalog is the file's shape (package dnsprov reads the same).
type Catalog struct {
	Lego      string     `json:"lego"`
	Providers []Provider `json:"providers"`
}

// Provider is one DNS provider.
type Provider struct {
	Code        string    `json:"code"`
	Name        string    `json:"name"`
	URL         string    `json:"url"`
	Credentials []Setting `json:"credentials"`
	Additional  []Setting `json:"additional"`
}

// Setting is one environment variable of a provider.
type Setting struct {
	Env         string `json:"env"`
	Description string `json:"description"`
}

// descriptor is the part of a lego provider descriptor that is read.
type descriptor struct {
	Name          string
	Code          string
	URL           string
	Configuration struct {
		Credentials map[string]string
		Additional  map[string]string
	}
}

func main() {
	out := flag.String("o", "catalog.json", "file to write")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gencatalog:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	dir, version, err := legoDir()
	if err != nil {
		return err
	}
	cat, err := build(dir, version)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(cat, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

// module is what `go list -m -json` and `go mod download -json` print.
type module struct {
	Path, Version, Dir, Error string
}

// legoDir returns the lego module's directory and version as go.mod
// selects them, downloading the module when the cache lacks it.
func legoDir() (string, string, error) {
	var m module
	if err := goJSON(&m, "list", "-m", "-json", legoModule); err != nil {
		return "", "", err
	}
	if m.Dir == "" {
		if err := goJSON(&m, "mod", "download", "-json", legoModule+"@"+m.Version); err != nil {
			return "", "", err
		}
	}
	if m.Dir == "" || m.Version == "" {
		return "", "", fmt.Errorf("cannot find the %s module directory (%s)", legoModule, m.Error)
	}
	return m.Dir, m.Version, nil
}

func goJSON(v any, args ...string) error {
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return json.Unmarshal(b, v)
}

// build reads every providers/dns/*/*.toml under dir.
func build(dir, version string) (Catalog, error) {
	files, err := filepath.Glob(filepath.Join(dir, "providers", "dns", "*", "*.toml"))
	if err != nil {
		return Catalog{}, err
	}
	if len(files) == 0 {
		return Catalog{}, fmt.Errorf("no provider descriptors under %s", dir)
	}
	cat := Catalog{Lego: version, Providers: []Provider{}}
	seen := map[string]string{}
	for _, f := range files {
		p, err := readDescriptor(f)
		if err != nil {
			return Catalog{}, err
		}
		if _, skip := excluded[p.Code]; skip {
			continue
		}
		if prev, dup := seen[p.Code]; dup {
			return Catalog{}, fmt.Errorf("provider code %q is in both %s and %s", p.Code, prev, f)
		}
		seen[p.Code] = f
		cat.Providers = append(cat.Providers, p)
	}
	sort.Slice(cat.Providers, func(i, j int) bool { return cat.Providers[i].Code < cat.Providers[j].Code })
	return cat, nil
}

func readDescriptor(path string) (Provider, error) {
	var d descriptor
	md, err := toml.DecodeFile(path, &d)
	if err != nil {
		return Provider{}, fmt.Errorf("%s: %w", path, err)
	}
	if d.Code == "" || d.Name == "" {
		return Provider{}, errors.New(path + ": descriptor without Code or Name")
	}
	p := Provider{Code: d.Code, Name: d.Name, URL: d.URL, Credentials: []Setting{}, Additional: []Setting{}}
	// The descriptor's order, which groups related settings, is kept.
	for _, k := range md.Keys() {
		if len(k) != 3 || k[0] != "Configuration" {
			continue
		}
		var list *[]Setting
		var table map[string]string
		switch k[1] {
		case "Credentials":
			list, table = &p.Credentials, d.Configuration.Credentials
		case "Additional":
			list, table = &p.Additional, d.Configuration.Additional
		default:
			continue
		}
		if !envName.MatchString(k[2]) {
			continue
		}
		*list = append(*list, Setting{Env: k[2], Description: strings.TrimSpace(table[k[2]])})
	}
	return p, nil
}
