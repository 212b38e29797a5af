package pebbletest

// pebble-challtestsrv: a DNS server whose records tests set through an
// HTTP management API, for DNS-01 (Pebble's -dnsserver and the solvers'
// resolvers), plus a stand-in for lego's exec DNS provider that writes into
// it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/shared/internal/testproc"
)

// ExecChallTestSrvEnv names the variable that turns a test binary into
// lego's exec DNS provider program (ExecProviderMain): the management URL
// of the pebble-challtestsrv it writes to.
const ExecChallTestSrvEnv = "PEBBLETEST_EXEC_CHALLTESTSRV"

// ChallTestSrv is a running pebble-challtestsrv with only its DNS server
// and management API on (no HTTP-01, HTTPS, TLS-ALPN-01 or DoH servers).
// Its DNS server answers A queries with 127.0.0.1 unless told otherwise,
// follows a CNAME one level, and answers other names with no records.
type ChallTestSrv struct {
	// DNSAddr is the DNS server, "127.0.0.1:<port>", over UDP and TCP: for
	// Pebble's Options.DNSServer and for resolver lists.
	DNSAddr string
	// ManagementURL is the management API, http://127.0.0.1:<port>.
	ManagementURL string

	cmd     *exec.Cmd
	exited  <-chan struct{}
	logPath string
	client  *http.Client
}

// StartChallTestSrv launches pebble-challtestsrv on free loopback ports,
// waits until a record set through its management API is served by its DNS
// server, and stops it when the test ends. The binary is the module's
// pinned tool (`go tool -n pebble-challtestsrv`), or $PEBBLE_CHALLTESTSRV_BIN.
// A binary that cannot be built or started fails the test.
func StartChallTestSrv(tb testing.TB) *ChallTestSrv {
	tb.Helper()
	bin := os.Getenv("PEBBLE_CHALLTESTSRV_BIN")
	if bin == "" {
		var err error
		if bin, err = tool("pebble-challtestsrv"); err != nil {
			tb.Fatalf("pebbletest: %v", err)
		}
	}
	dir := tb.TempDir()
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		s, err := startChallTestSrv(bin, dir, attempt)
		if err == nil {
			tb.Cleanup(func() {
				s.stop()
				if tb.Failed() {
					tb.Logf("pebbletest: pebble-challtestsrv log (%s):\n%s", s.DNSAddr, tail(s.logPath, 60))
				}
			})
			return s
		}
		lastErr = err
	}
	tb.Fatalf("pebbletest: %v", lastErr)
	return nil
}

func startChallTestSrv(bin, dir string, attempt int) (*ChallTestSrv, error) {
	dnsPort, err := freeTCPAndUDPPort()
	if err != nil {
		return nil, err
	}
	mgmtPort, err := testproc.FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("challtestsrv-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin,
		"-dnsserver", "127.0.0.1:"+strconv.Itoa(dnsPort),
		"-management", "127.0.0.1:"+strconv.Itoa(mgmtPort),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		// Every name is 127.0.0.1 and has no IPv6 address, so Pebble's VA
		// reaches the tests' loopback responders.
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
	)
	cmd.Dir = dir
	exited, err := startLogged(cmd, logFile)
	if err != nil {
		return nil, err
	}
	s := &ChallTestSrv{
		DNSAddr:       "127.0.0.1:" + strconv.Itoa(dnsPort),
		ManagementURL: "http://127.0.0.1:" + strconv.Itoa(mgmtPort),
		cmd:           cmd,
		exited:        exited,
		logPath:       logPath,
		client:        &http.Client{Timeout: 5 * time.Second},
	}

	// pebble-challtestsrv logs a listener that cannot bind and runs on, so
	// readiness is a probe record that went in through this management
	// port and comes out of this DNS port.
	probe := fmt.Sprintf("probe-%d.pebbletest.invalid.", mgmtPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.post("/set-txt", map[string]string{"host": probe, "value": "ready"}) == nil {
			if vals, err := s.lookupTXT(probe); err == nil && slices.Contains(vals, "ready") {
				if err := s.post("/clear-txt", map[string]string{"host": probe}); err == nil {
					return s, nil
				}
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("pebble-challtestsrv exited during start (%s):\n%s", cmd.ProcessState, tail(logPath, 30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("pebble-challtestsrv did not serve DNS on %s within 30s:\n%s", s.DNSAddr, tail(logPath, 30))
		}
	}
}

// freeTCPAndUDPPort is a loopback port that was free for both TCP and UDP
// a moment ago (the DNS server listens on both).
func freeTCPAndUDPPort() (int, error) {
	for range 20 {
		port, err := testproc.FreePort()
		if err != nil {
			return 0, err
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			_ = pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no loopback port free for both TCP and UDP")
}

func (s *ChallTestSrv) stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.client.CloseIdleConnections()
}

// SetTXT adds a TXT value at host (/set-txt); values accumulate.
func (s *ChallTestSrv) SetTXT(tb testing.TB, host, value string) {
	tb.Helper()
	s.must(tb, "/set-txt", map[string]string{"host": host, "value": value})
}

// ClearTXT removes every TXT value at host (/clear-txt).
func (s *ChallTestSrv) ClearTXT(tb testing.TB, host string) {
	tb.Helper()
	s.must(tb, "/clear-txt", map[string]string{"host": host})
}

// SetCNAME makes host an alias of target (/set-cname). The DNS server
// answers any question for host with the CNAME and target's records.
func (s *ChallTestSrv) SetCNAME(tb testing.TB, host, target string) {
	tb.Helper()
	s.must(tb, "/set-cname", map[string]string{"host": host, "target": target})
}

// ClearCNAME removes host's CNAME (/clear-cname).
func (s *ChallTestSrv) ClearCNAME(tb testing.TB, host string) {
	tb.Helper()
	s.must(tb, "/clear-cname", map[string]string{"host": host})
}

// AddA answers A queries for host with addrs instead of the default
// 127.0.0.1 (/add-a).
func (s *ChallTestSrv) AddA(tb testing.TB, host string, addrs ...string) {
	tb.Helper()
	s.must(tb, "/add-a", map[string]any{"host": host, "addresses": addrs})
}

// LookupTXT asks the DNS server directly for the TXT values at name (a
// CNAME at name is followed, as the server does).
func (s *ChallTestSrv) LookupTXT(tb testing.TB, name string) []string {
	tb.Helper()
	vals, err := s.lookupTXT(name)
	if err != nil {
		tb.Fatalf("pebbletest: %v", err)
	}
	return vals
}

func (s *ChallTestSrv) lookupTXT(name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.DNSAddr)
	if err != nil {
		return nil, fmt.Errorf("TXT %s at %s: %w", name, s.DNSAddr, err)
	}
	var vals []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			vals = append(vals, strings.Join(txt.Txt, ""))
		}
	}
	return vals, nil
}

func (s *ChallTestSrv) must(tb testing.TB, path string, body any) {
	tb.Helper()
	if err := s.post(path, body); err != nil {
		tb.Fatalf("pebbletest: %v", err)
	}
}

func (s *ChallTestSrv) post(path string, body any) error {
	return managementPost(s.client, s.ManagementURL, path, body)
}

func managementPost(client *http.Client, base, path string, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s%s: %w", base, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s%s %s: %s %s", base, path, raw, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// ExecEnv is what a test sets (t.Setenv) to have lego's exec DNS provider
// write into this server:
//
//   - EXEC_PATH: the test binary itself, as an absolute path (lego runs it
//     with exec.Command, which resolves a relative path against the working
//     directory, so os.Args[0] is not safe);
//   - PEBBLETEST_EXEC_CHALLTESTSRV (ExecChallTestSrvEnv): this server's
//     management URL. lego gives the program no environment of its own, so
//     it inherits the test process's environment at that moment, and this
//     variable reaches it from there;
//   - LEGO_DISABLE_CNAME_SUPPORT=true: lego's providers otherwise follow
//     CNAMEs at the record name by asking the machine's resolvers, which
//     know nothing of names that live in this server; this keeps tests off
//     the machine's DNS.
//
// lego's exec provider reads EXEC_PATH when it is constructed, and the
// test binary's TestMain must call ExecProviderMain first.
func (s *ChallTestSrv) ExecEnv(tb testing.TB) map[string]string {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatalf("pebbletest: the test binary's path: %v", err)
	}
	return map[string]string{
		"EXEC_PATH":                  self,
		ExecChallTestSrvEnv:          s.ManagementURL,
		"LEGO_DISABLE_CNAME_SUPPORT": "true",
	}
}

// ExecProviderMain makes the test binary act as the program of lego's exec
// DNS provider when $PEBBLETEST_EXEC_CHALLTESTSRV is set: lego runs
// `EXEC_PATH present <fqdn> <value>` and `EXEC_PATH cleanup <fqdn> <value>`
// (its default mode), which become /set-txt and /clear-txt calls on that
// management API; then the process exits (0, or 1 with the error on
// stderr). Without the variable it returns at once. Call it first in
// TestMain, before m.Run parses the test flags.
//
// cleanup clears every TXT value at the name (the management API has no
// way to remove one value), unlike real providers, which remove only their
// own; a wildcard and its apex share the name and so are cleared together.
func ExecProviderMain() {
	mgmt := os.Getenv(ExecChallTestSrvEnv)
	if mgmt == "" {
		return
	}
	args := os.Args[1:]
	if len(args) != 3 || (args[0] != "present" && args[0] != "cleanup") {
		fmt.Fprintf(os.Stderr, "pebbletest: as lego's exec provider (%s is set) expected `present|cleanup <fqdn> <value>`, got %q\n", ExecChallTestSrvEnv, args)
		os.Exit(2)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	var err error
	if args[0] == "present" {
		err = managementPost(client, mgmt, "/set-txt", map[string]string{"host": args[1], "value": args[2]})
	} else {
		err = managementPost(client, mgmt, "/clear-txt", map[string]string{"host": args[1]})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pebbletest: exec provider %s: %v\n", args[0], err)
		os.Exit(1)
	}
	// Not os.Exit(0): in a race-enabled test binary that runs the race
	// runtime's finalizer, which waits a second (GORACE atexit_sleep_ms)
	// for goroutines to report; this process has nothing left to report
	// or flush.
	syscall.Exit(0)
}
