package config_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLocalDefaults(t *testing.T) {
	c, err := config.Load(config.Local, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.DataDir != "./data" || c.MasterKeyFile != "data/master.key" ||
		c.LogFormat != "text" || c.LogLevel != slog.LevelInfo || c.WorkerConcurrency != 4 ||
		c.QueueVisibility != time.Minute || c.QueueMaxReceives != 5 || c.ShutdownTimeout != 30*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestValuesAreParsed(t *testing.T) {
	c, err := config.Load(config.Local, env(map[string]string{
		"PORT": "9090", "CERTFLEET_DATA": "/var/lib/certfleet", "CERTFLEET_LOG_LEVEL": "debug",
		"CERTFLEET_LOG_FORMAT": "json", "CERTFLEET_QUEUE_VISIBILITY": "2m", "CERTFLEET_WORKER_CONCURRENCY": " 8 ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9090 || c.MasterKeyFile != "/var/lib/certfleet/master.key" || c.LogLevel != slog.LevelDebug ||
		c.LogFormat != "json" || c.QueueVisibility != 2*time.Minute || c.WorkerConcurrency != 8 {
		t.Fatalf("config = %+v", c)
	}
}

func TestPublicURL(t *testing.T) {
	c, err := config.Load(config.Local, env(map[string]string{"PORT": "9000"}))
	if err != nil || c.PublicURL != "http://localhost:9000" || c.SessionCookie != "cjj365" || c.RateLimit != 100 {
		t.Fatalf("defaults follow PORT: %+v, %v", c, err)
	}
	c, err = config.Load(config.Local, env(map[string]string{"CERTFLEET_PUBLIC_URL": "https://certs.example.com/"}))
	if err != nil || c.PublicURL != "https://certs.example.com" {
		t.Fatalf("public URL: %q, %v", c.PublicURL, err)
	}
	for _, bad := range []string{"certs.example.com", "ftp://x", "https://x/app", "https://"} {
		if _, err := config.Load(config.Local, env(map[string]string{"CERTFLEET_PUBLIC_URL": bad})); err == nil ||
			!strings.Contains(err.Error(), "CERTFLEET_PUBLIC_URL") {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
	if _, err := config.Load(config.Local, env(map[string]string{"CERTFLEET_SESSION_COOKIE": "a b"})); err == nil {
		t.Error("a cookie name with a space was accepted")
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	_, err := config.Load(config.Local, env(map[string]string{
		"PORT": "eighty", "CERTFLEET_LOG_FORMAT": "xml", "CERTFLEET_QUEUE_VISIBILITY": "10", "CERTFLEET_LOG_LEVEL": "loud",
	}))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{`PORT="eighty": must be a whole number from 1 to 65535`, `CERTFLEET_LOG_FORMAT="xml"`,
		`CERTFLEET_QUEUE_VISIBILITY="10": must be a duration`, `CERTFLEET_LOG_LEVEL="loud"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestLambdaNeedsItsResources(t *testing.T) {
	_, err := config.Load(config.Lambda, env(nil))
	for _, name := range []string{"CERTFLEET_ISSUANCE_QUEUE_URL", "CERTFLEET_ISSUANCE_DLQ_URL", "CERTFLEET_KMS_KEY_ID"} {
		if err == nil || !strings.Contains(err.Error(), name+" is required") {
			t.Errorf("missing %s not reported: %v", name, err)
		}
	}
	c, err := config.Load(config.Lambda, env(map[string]string{
		"CERTFLEET_ISSUANCE_QUEUE_URL": "q", "CERTFLEET_ISSUANCE_DLQ_URL": "d", "CERTFLEET_KMS_KEY_ID": "k",
	}))
	if err != nil || c.LogFormat != "json" {
		t.Fatalf("lambda config = %+v, %v", c, err)
	}
}

// TestEveryVariableIsDocumented keeps the README's table in step with Vars.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range config.Vars {
		if !strings.Contains(string(readme), "| `"+v.Name+"` |") {
			t.Errorf("README.md has no table row for %s", v.Name)
		}
	}
}
