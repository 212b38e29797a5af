package dns01

// lego's DNS providers read their configuration from environment variables
// when they are constructed (NewDNSChallengeProviderByName calls each
// provider's NewDNSProvider, which reads e.g. CLOUDFLARE_DNS_API_TOKEN);
// there is no by-name constructor that takes a map. So a user's provider is
// built with the process environment swapped for one made of the user's
// settings, and the environment is put back at once. This is sound because
// certfleet reads its own configuration from the environment once, at
// start (package config), and nothing in the worker reads it afterwards;
// envMu keeps the swaps from overlapping each other and from anything in
// this package that must see the real environment.
//
// The environment a user's provider is built in holds the user's settings
// and nothing of certfleet's own, on purpose: a provider given no
// credentials falls back to ambient ones (route53 to AWS_ACCESS_KEY_ID,
// the shared ~/.aws files or the instance role), and certfleet's own role
// may write the delegation zone, where a user could then answer for another
// user's delegated names. Only the process's LEGO_* switches and GODEBUG
// stay (lego and the runtime read them while other work runs), and the AWS
// SDK's file and instance-metadata fallbacks are turned off.

import (
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	providers "github.com/go-acme/lego/v4/providers/dns"

	"github.com/certfleet/certfleet/shared/apperr"
)

// envMu is held for writing while the environment is swapped, and for
// reading by what must see the process's real environment (constructing
// the operator's delegation provider, and calling one that starts a
// program, which inherits the environment of that moment).
var envMu sync.RWMutex

// refusedProviders are lego provider codes no user may configure: exec
// runs a program on the worker, manual waits for a person at a terminal.
var refusedProviders = map[string]string{
	"exec":   "runs a program on certfleet's servers",
	"manual": "waits for someone to create the record by hand at a terminal",
}

// settingName is the shape of a lego setting: an environment variable
// name in upper case.
var settingName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// reservedSettings are variables a user's settings may not set: runtime
// and network behaviour of the whole process, and credentials or files
// outside the user's own settings.
var reservedSettings = map[string]bool{
	"GODEBUG": true, "HOME": true, "PATH": true, "TMPDIR": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
	"SSL_CERT_DIR":                           true,
	"GOOGLE_APPLICATION_CREDENTIALS":         true,
	"HYPERONE_PASSPORT_LOCATION":             true, // a file
	"AWS_EC2_METADATA_DISABLED":              true,
	"AWS_CONTAINER_CREDENTIALS_FULL_URI":     true,
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": true,
}

// sandboxEnv is set while a user's provider is built: the AWS SDK (route53,
// lightsail) must not fall back to certfleet's shared config files or
// instance role.
var sandboxEnv = map[string]string{
	"AWS_EC2_METADATA_DISABLED":   "true",
	"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	"AWS_CONFIG_FILE":             os.DevNull,
}

// checkSettings refuses a provider code or setting no user may use, with
// an apperr Invalid that says why.
func checkSettings(code string, settings map[string]string) error {
	if code == "" {
		return apperr.New(apperr.Invalid, "the DNS provider has no provider code (e.g. \"cloudflare\")")
	}
	for refused, why := range refusedProviders {
		if strings.EqualFold(code, refused) {
			return apperr.New(apperr.Invalid, "the DNS provider %q is not available here: it %s", code, why)
		}
	}
	for k, v := range settings {
		switch {
		case !settingName.MatchString(k):
			return apperr.New(apperr.Invalid, "DNS provider %q: setting %q is not an upper-case variable name like CLOUDFLARE_DNS_API_TOKEN", code, k)
		case strings.HasSuffix(k, "_FILE") || strings.HasSuffix(k, "_PATH"):
			return apperr.New(apperr.Invalid, "DNS provider %q: setting %s names a file on certfleet's servers; give the value itself (e.g. %s)", code, k, strings.TrimSuffix(strings.TrimSuffix(k, "_FILE"), "_PATH"))
		case reservedSettings[k] || strings.HasPrefix(k, "LEGO_"):
			return apperr.New(apperr.Invalid, "DNS provider %q: setting %s is not allowed", code, k)
		case strings.ContainsRune(v, 0):
			return apperr.New(apperr.Invalid, "DNS provider %q: setting %s holds a NUL character", code, k)
		}
	}
	return nil
}

// userProvider builds the lego provider code with settings as its whole
// configuration. Errors: apperr Invalid for a refused or unknown code, a
// refused setting, or a provider that rejects its settings (its message
// names what is missing).
func userProvider(code string, settings map[string]string) (challenge.Provider, error) {
	if err := checkSettings(code, settings); err != nil {
		return nil, err
	}
	prewarm.Do(prewarmStdlib)

	envMu.Lock()
	defer envMu.Unlock()
	saved := environ()
	want := map[string]string{}
	for k, v := range saved {
		if k == "GODEBUG" || strings.HasPrefix(k, "LEGO_") {
			want[k] = v
		}
	}
	for k, v := range settings {
		want[k] = v
	}
	for k, v := range sandboxEnv {
		want[k] = v
	}
	defer func() { setEnv(saved, environ()) }() // also undoes a provider's own Setenv
	setEnv(want, saved)

	p, err := providers.NewDNSChallengeProviderByName(code)
	if err != nil {
		if strings.HasPrefix(err.Error(), "unrecognized DNS provider") {
			return nil, apperr.New(apperr.Invalid, "unknown DNS provider %q", code)
		}
		return nil, apperr.New(apperr.Invalid, "DNS provider %q refused its settings: %v", code, err)
	}
	return p, nil
}

// processProvider builds the lego provider code from the process's own
// environment (operator configuration), never while it is swapped.
func processProvider(code string) (challenge.Provider, error) {
	envMu.RLock()
	defer envMu.RUnlock()
	return providers.NewDNSChallengeProviderByName(code)
}

// setEnv makes the environment want, given that it is current now,
// touching only the variables that differ (setting GODEBUG, even to its
// own value, makes the runtime re-read it).
func setEnv(want, current map[string]string) {
	for k := range current {
		if _, ok := want[k]; !ok {
			_ = os.Unsetenv(k)
		}
	}
	for k, v := range want {
		if old, ok := current[k]; !ok || old != v {
			_ = os.Setenv(k, v) // names and values were checked
		}
	}
}

// environ is the process environment as a map (the first of duplicates).
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			if _, dup := m[k]; !dup {
				m[k] = v
			}
		}
	}
	return m
}

var prewarm sync.Once

// prewarmStdlib makes the standard library read, from the real
// environment, what it reads only once on first use (system roots with
// SSL_CERT_FILE, the proxy settings, the local time zone with TZ), so that
// a first use during a swap does not fix the process to a user's
// environment.
func prewarmStdlib() {
	_, _ = x509.SystemCertPool()
	_, _ = http.ProxyFromEnvironment(&http.Request{URL: &url.URL{Scheme: "https", Host: "certfleet.invalid"}})
	_, _ = time.Now().Zone()
}
