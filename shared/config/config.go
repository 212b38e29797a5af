// Package config reads certfleet's configuration from environment
// variables, once, at start-up. Every variable is listed in Vars (and in
// the README's table, which a test keeps in step); a bad value fails fast
// with a message naming the variable, and every variable has a default that
// is safe for the local shape.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Shape is how certfleet runs.
type Shape string

const (
	// Local is the one-process server over bbolt (`certfleet serve`).
	Local Shape = "local"
	// Lambda is the AWS shape: DynamoDB, SQS, KMS.
	Lambda Shape = "lambda"
)

// Config is the typed configuration.
type Config struct {
	Shape             Shape
	Port              int
	DataDir           string
	MasterKeyFile     string
	LogLevel          slog.Level
	LogFormat         string // "text" or "json"
	TablePrefix       string
	IssuanceQueueURL  string
	IssuanceDLQURL    string
	KMSKeyID          string
	WorkerConcurrency int
	QueueVisibility   time.Duration
	QueueMaxReceives  int
	ShutdownTimeout   time.Duration
	PublicURL         string
	SessionCookie     string
	RateLimit         int
	SMTP              SMTP
	// CADirectories overrides built-in CA providers' ACME directories, by
	// provider name (CERTFLEET_CA_<NAME>_DIRECTORY).
	CADirectories map[string]string
	// CARootsFile is a PEM file of extra roots trusted when talking to CAs.
	CARootsFile string
	// DelegationZone is certfleet's own DNS zone that dns-01-delegation
	// writes TXT records into; "" turns the method off.
	DelegationZone string
	// DelegationProvider is the lego DNS provider code that writes the
	// delegation zone, configured by that provider's own variables.
	DelegationProvider string
	// DNSResolvers are host:port resolvers for DNS-01 checks; none means
	// the system's.
	DNSResolvers []string
	// TLSALPNAddr is where the local shape answers TLS-ALPN-01
	// challenges; "" means it does not.
	TLSALPNAddr string
	// CAMaxInFlight bounds the ACME requests one worker process has in
	// flight per CA.
	CAMaxInFlight int
	// CATimeout bounds one call to an ACME CA (all its HTTP requests).
	CATimeout time.Duration
}

// CAProviders are the built-in CA providers whose directory can be
// overridden, by name (acmeacct.Builtins).
var CAProviders = []string{"letsencrypt", "google", "letsencrypt-staging", "google-staging", "zerossl", "buypass", "sslcom"}

// CADirectoryVar is the variable that overrides a provider's directory.
func CADirectoryVar(provider string) string {
	return "CERTFLEET_CA_" + strings.ToUpper(strings.ReplaceAll(provider, "-", "_")) + "_DIRECTORY"
}

func init() {
	for _, name := range CAProviders {
		Vars = append(Vars, Var{CADirectoryVar(name), "", "ACME directory URL used for the " + name + " provider (a private or test CA: step-ca, Pebble)",
			func(c *Config, v string) error {
				u, err := url.Parse(v)
				if err != nil || u.Scheme != "https" || u.Host == "" {
					return errors.New("must be an https URL of an ACME directory")
				}
				c.CADirectories[name] = v
				return nil
			}})
	}
	Vars = append(Vars, Var{"CERTFLEET_CA_ROOTS", "", "PEM file of extra root certificates trusted when talking to CAs (for a private or test CA)",
		func(c *Config, v string) error {
			c.CARootsFile = v
			return nil
		}})
}

// SMTP is the mail server; an empty Host means none (the local shape then
// writes mail to an outbox folder under the data directory).
type SMTP struct {
	Host     string
	Port     int
	Username string
	// Password is read from the environment in the local shape; in the
	// Lambda shape PasswordSSM names the SSM SecureString that holds it.
	Password    string
	PasswordSSM string
	From        string
}

// Var documents one environment variable.
type Var struct {
	Name    string
	Default string
	Doc     string
	set     func(c *Config, v string) error
}

// Vars is every variable certfleet reads, in README order.
var Vars = []Var{
	{"PORT", "8080", "local: TCP port of the HTTP server", func(c *Config, v string) (err error) {
		c.Port, err = intIn(v, 1, 65535)
		return
	}},
	{"CERTFLEET_DATA", "./data", "local: directory for the bbolt file and the master key", func(c *Config, v string) error {
		c.DataDir = v
		return nil
	}},
	{"CERTFLEET_MASTER_KEY_FILE", "$CERTFLEET_DATA/master.key", "local: file holding the master key that wraps every data key (created with mode 0600 on first run; back it up)", func(c *Config, v string) error {
		c.MasterKeyFile = v
		return nil
	}},
	{"CERTFLEET_LOG_LEVEL", "info", "debug, info, warn or error", func(c *Config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
	{"CERTFLEET_LOG_FORMAT", "text (json in Lambda)", "text or json", func(c *Config, v string) error {
		if v != "text" && v != "json" {
			return errors.New("must be text or json")
		}
		c.LogFormat = v
		return nil
	}},
	{"CERTFLEET_TABLE_PREFIX", "certfleet-", "lambda: prefix of the DynamoDB table names (template.yaml sets <stack>-)", func(c *Config, v string) error {
		c.TablePrefix = v
		return nil
	}},
	{"CERTFLEET_ISSUANCE_QUEUE_URL", "", "lambda (required): URL of the SQS issuance queue", func(c *Config, v string) error {
		c.IssuanceQueueURL = v
		return nil
	}},
	{"CERTFLEET_ISSUANCE_DLQ_URL", "", "lambda (required): URL of the issuance queue's dead-letter queue", func(c *Config, v string) error {
		c.IssuanceDLQURL = v
		return nil
	}},
	{"CERTFLEET_KMS_KEY_ID", "", "lambda (required): KMS key id, ARN or alias that wraps data keys", func(c *Config, v string) error {
		c.KMSKeyID = v
		return nil
	}},
	{"CERTFLEET_WORKER_CONCURRENCY", "4", "local: steps the worker runs at once (1..256)", func(c *Config, v string) (err error) {
		c.WorkerConcurrency, err = intIn(v, 1, 256)
		return
	}},
	{"CERTFLEET_QUEUE_VISIBILITY", "60s", "local: how long a received message stays hidden before redelivery", func(c *Config, v string) (err error) {
		c.QueueVisibility, err = durationIn(v, time.Second, 12*time.Hour)
		return
	}},
	{"CERTFLEET_QUEUE_MAX_RECEIVES", "5", "local: receives before a message moves to the dead-letter list (1..100)", func(c *Config, v string) (err error) {
		c.QueueMaxReceives, err = intIn(v, 1, 100)
		return
	}},
	{"CERTFLEET_SHUTDOWN_TIMEOUT", "30s", "local: how long shutdown waits for in-flight requests and steps", func(c *Config, v string) (err error) {
		c.ShutdownTimeout, err = durationIn(v, 0, 10*time.Minute)
		return
	}},
	{"CERTFLEET_PUBLIC_URL", "http://localhost:$PORT", "base URL people reach certfleet at: links in mails, and the session cookie is Secure when it is https", func(c *Config, v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return errors.New("must be an http or https URL without a path, such as https://certs.example.com")
		}
		c.PublicURL = strings.TrimSuffix(v, "/")
		return nil
	}},
	{"CERTFLEET_SESSION_COOKIE", "cjj365", "name of the session cookie", func(c *Config, v string) error {
		if !cookieName.MatchString(v) {
			return errors.New("must be 1..64 letters, digits, '-' or '_'")
		}
		c.SessionCookie = v
		return nil
	}},
	{"CERTFLEET_RATE_LIMIT", "100", "requests per minute per session, API key or anonymous address (1..100000)", func(c *Config, v string) (err error) {
		c.RateLimit, err = intIn(v, 1, 100000)
		return
	}},
	{"CERTFLEET_SMTP_HOST", "", "mail server for activation and reset mails; empty: the local shape writes them to $CERTFLEET_DATA/outbox", func(c *Config, v string) error {
		c.SMTP.Host = v
		return nil
	}},
	{"CERTFLEET_SMTP_PORT", "587", "mail server port: 587 (STARTTLS) or 465 (TLS); 25 only to a loopback relay", func(c *Config, v string) (err error) {
		c.SMTP.Port, err = intIn(v, 1, 65535)
		return
	}},
	{"CERTFLEET_SMTP_USERNAME", "", "mail server login", func(c *Config, v string) error {
		c.SMTP.Username = v
		return nil
	}},
	{"CERTFLEET_SMTP_PASSWORD", "", "local: mail server password", func(c *Config, v string) error {
		c.SMTP.Password = v
		return nil
	}},
	{"CERTFLEET_SMTP_PASSWORD_SSM", "", "lambda: name of the SSM SecureString parameter holding the mail server password", func(c *Config, v string) error {
		c.SMTP.PasswordSSM = v
		return nil
	}},
	{"CERTFLEET_SMTP_FROM", "certfleet@localhost", "sender address of certfleet's mails", func(c *Config, v string) error {
		c.SMTP.From = v
		return nil
	}},
	{"CERTFLEET_DELEGATION_ZONE", "", "certfleet's own DNS zone for dns-01-delegation (e.g. acme.example.net); empty turns the method off", func(c *Config, v string) error {
		v = strings.TrimSuffix(strings.ToLower(v), ".")
		if !dnsName.MatchString(v) {
			return errors.New("must be a DNS name such as acme.example.net")
		}
		c.DelegationZone = v
		return nil
	}},
	{"CERTFLEET_DELEGATION_PROVIDER", "", "lego DNS provider code that writes the delegation zone (route53 in the cloud), configured by that provider's own variables", func(c *Config, v string) error {
		c.DelegationProvider = strings.ToLower(v)
		return nil
	}},
	{"CERTFLEET_DNS_RESOLVERS", "", "comma-separated host:port resolvers for DNS-01 propagation and CNAME checks; empty: the system's", func(c *Config, v string) error {
		for _, r := range strings.Split(v, ",") {
			r = strings.TrimSpace(r)
			if _, _, err := net.SplitHostPort(r); err != nil {
				return fmt.Errorf("%q is not host:port", r)
			}
			c.DNSResolvers = append(c.DNSResolvers, r)
		}
		return nil
	}},
	{"CERTFLEET_TLSALPN_ADDR", "", "local: address to answer TLS-ALPN-01 challenges on (e.g. :443); empty: not answered", func(c *Config, v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("must be host:port or :port")
		}
		c.TLSALPNAddr = v
		return nil
	}},
	{"CERTFLEET_CA_MAX_IN_FLIGHT", "8", "ACME requests one worker process sends to one CA at once (1..256)", func(c *Config, v string) (err error) {
		c.CAMaxInFlight, err = intIn(v, 1, 256)
		return err
	}},
	{"CERTFLEET_CA_TIMEOUT", "30s", "how long one call to an ACME CA may take before the step is retried (1s..5m)", func(c *Config, v string) (err error) {
		c.CATimeout, err = durationIn(v, time.Second, 5*time.Minute)
		return err
	}},
}

var dnsName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

var cookieName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Load reads the configuration for shape through getenv (os.Getenv in
// production). It reports every bad variable at once.
func Load(shape Shape, getenv func(string) string) (Config, error) {
	c := Config{Shape: shape, LogFormat: "text", TablePrefix: "certfleet-", DataDir: "./data",
		Port: 8080, WorkerConcurrency: 4, QueueVisibility: time.Minute, QueueMaxReceives: 5,
		ShutdownTimeout: 30 * time.Second, SessionCookie: "cjj365", RateLimit: 100,
		SMTP: SMTP{Port: 587, From: "certfleet@localhost"}, CADirectories: map[string]string{}, CAMaxInFlight: 8,
		CATimeout: 30 * time.Second}
	if shape == Lambda {
		c.LogFormat = "json"
	}
	var errs []error
	for _, v := range Vars {
		raw := strings.TrimSpace(getenv(v.Name))
		if raw == "" {
			continue
		}
		if err := v.set(&c, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", v.Name, raw, err))
		}
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://localhost:" + strconv.Itoa(c.Port)
	}
	if c.MasterKeyFile == "" {
		c.MasterKeyFile = filepath.Join(c.DataDir, "master.key")
	}
	if shape == Lambda {
		for _, v := range []struct{ name, val string }{
			{"CERTFLEET_ISSUANCE_QUEUE_URL", c.IssuanceQueueURL},
			{"CERTFLEET_ISSUANCE_DLQ_URL", c.IssuanceDLQURL},
			{"CERTFLEET_KMS_KEY_ID", c.KMSKeyID},
		} {
			if v.val == "" {
				errs = append(errs, fmt.Errorf("%s is required in the Lambda shape", v.name))
			}
		}
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return c, nil
}

func intIn(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be a whole number from %d to %d", lo, hi)
	}
	return n, nil
}

func durationIn(v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("must be a duration such as 30s or 5m, from %s to %s", lo, hi)
	}
	return d, nil
}
