package localstack

import (
	"context"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
)

// apiRoute is one HttpApi event of a function in template.yaml.
type apiRoute struct {
	function, method string
	segments         []string
}

// templateRoutes reads every function's HttpApi events.
func templateRoutes(t *testing.T) []apiRoute {
	t.Helper()
	raw, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Resources map[string]struct {
			Type       string `yaml:"Type"`
			Properties struct {
				Events map[string]struct {
					Type       string `yaml:"Type"`
					Properties struct {
						Method string `yaml:"Method"`
						Path   string `yaml:"Path"`
					} `yaml:"Properties"`
				} `yaml:"Events"`
			} `yaml:"Properties"`
		} `yaml:"Resources"`
	}
	if err := yaml.Unmarshal(raw, &tmpl); err != nil {
		t.Fatal(err)
	}
	var out []apiRoute
	for id, res := range tmpl.Resources {
		if res.Type != "AWS::Serverless::Function" {
			continue
		}
		for _, ev := range res.Properties.Events {
			if ev.Type == "HttpApi" {
				out = append(out, apiRoute{function: id, method: strings.ToUpper(ev.Properties.Method),
					segments: strings.Split(strings.Trim(ev.Properties.Path, "/"), "/")})
			}
		}
	}
	return out
}

// matches says whether the API route takes a request for path (whose
// {params} stand for any one segment) with method, and how specifically:
// more literal segments first, then no greedy {proxy+}, then a named
// method over ANY, as API Gateway's HTTP APIs choose.
func (r apiRoute) matches(method string, path []string) (bool, int) {
	if r.method != "ANY" && r.method != method {
		return false, 0
	}
	score := 0
	for i, seg := range r.segments {
		if strings.HasSuffix(seg, "+}") {
			if len(path) <= i {
				return false, 0
			}
			return true, score*4 + boolInt(r.method != "ANY")
		}
		if i >= len(path) {
			return false, 0
		}
		if !strings.HasPrefix(seg, "{") {
			if seg != path[i] {
				return false, 0
			}
			score++
		}
	}
	if len(path) != len(r.segments) {
		return false, 0
	}
	return true, score*4 + 2 + boolInt(r.method != "ANY")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// groupFunctions names the functions of groups whose function is not
// <Group>Function.
var groupFunctions = map[string]string{"challenges": "ChallengeFunction"}

// TestTemplateRoutesReachTheirFunctions: every route of every route group
// reaches, through the HTTP API that template.yaml declares, the function
// of that group (logical id <Group>Function) and no other.
func TestTemplateRoutesReachTheirFunctions(t *testing.T) {
	cfg, err := config.Load(config.Local, func(k string) string {
		return map[string]string{"CERTFLEET_DATA": t.TempDir(), "CERTFLEET_LOG_LEVEL": "warn"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Local(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	api := templateRoutes(t)
	checked := 0
	for _, g := range a.Groups() {
		for _, r := range g.Routes {
			path := strings.Split(strings.Trim(r.Path, "/"), "/")
			best, bestScore, tie := "", -1, false
			for _, ar := range api {
				ok, score := ar.matches(r.Method, path)
				switch {
				case !ok:
				case score > bestScore:
					best, bestScore, tie = ar.function, score, false
				case score == bestScore && ar.function != best:
					tie = true
				}
			}
			checked++
			want := groupFunctions[g.Name]
			if want == "" {
				want = g.Name + "Function"
			}
			switch {
			case best == "":
				t.Errorf("%s %s (group %s): no HTTP API route in template.yaml", r.Method, r.Path, g.Name)
			case tie:
				t.Errorf("%s %s (group %s): two functions' routes match it equally", r.Method, r.Path, g.Name)
			case !strings.EqualFold(best, want):
				t.Errorf("%s %s (group %s) reaches %s", r.Method, r.Path, g.Name, best)
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d routes checked: is route discovery broken?", checked)
	}
	t.Logf("%d routes reach their functions", checked)
}
