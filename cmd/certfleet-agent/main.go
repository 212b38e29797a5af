// Command certfleet-agent is a small device agent for certfleet's device
// API (the cert-ctrl device protocol): it logs the device in, polls its
// update signals, installs the certificates its install config copies,
// runs its exec items and imports the private CAs assigned to it.
//
//	certfleet-agent login --server URL [--device-url URL] [--state DIR] [--apikey KEY]
//	certfleet-agent updates [--state DIR] [--wait N] [--trust-dir DIR] [--trust-update-cmd CMD]
//	certfleet-agent run [--state DIR] [--interval 60s] [--wait N] [--trust-dir DIR] [--trust-update-cmd CMD]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/certfleet/certfleet/shared/agent"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  certfleet-agent login --server URL [--device-url URL] [--state DIR] [--apikey KEY]
  certfleet-agent updates [--state DIR] [--wait N] [--trust-dir DIR] [--trust-update-cmd CMD]
  certfleet-agent run [--state DIR] [--interval 60s] [--wait N] [--trust-dir DIR] [--trust-update-cmd CMD]`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "certfleet-agent:", err)
		os.Exit(1)
	}
}

func defaultState() string {
	if d := os.Getenv("CERTFLEET_AGENT_STATE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/certfleet-agent"
	}
	if d, err := os.UserConfigDir(); err == nil {
		return d + "/certfleet-agent"
	}
	return ".certfleet-agent"
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(errOut, usage)
		return errors.New("missing subcommand")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(errOut)
	state := fs.String("state", defaultState(), "the agent's state directory")
	server := fs.String("server", "", "the certfleet server's URL (login)")
	apikey := fs.String("apikey", "", "register with this API key instead of the device code flow (login)")
	name := fs.String("name", "", "the device's name (login)")
	deviceURL := fs.String("device-url", "", "send the device's own calls (polls, materials) here: the deployment's DeviceSelfUrl (login)")
	interval := fs.Duration("interval", 60*time.Second, "the poll interval (run)")
	wait := fs.Int("wait", 0, "hold each poll up to N seconds until a signal arrives, 0..30 (updates, run)")
	trustDir := fs.String("trust-dir", "", "write assigned CAs to this directory as certfleet-ca-<id>.crt, e.g. /usr/local/share/ca-certificates (updates, run)")
	trustCmd := fs.String("trust-update-cmd", "", "run this with /bin/sh -c after the trust directory changed, e.g. update-ca-certificates (updates, run)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *wait < 0 || *wait > agent.MaxWait {
		return fmt.Errorf("--wait must be 0..%d seconds", agent.MaxWait)
	}
	if *trustDir != "" && !filepath.IsAbs(*trustDir) {
		return errors.New("--trust-dir must be an absolute path")
	}
	a := agent.New(*state, out)
	a.Version = version
	a.Wait, a.TrustDir, a.TrustUpdateCmd = *wait, *trustDir, *trustCmd
	switch args[0] {
	case "login":
		return a.Login(ctx, agent.LoginOptions{Server: *server, APIKey: *apikey, Name: *name, DeviceURL: *deviceURL})
	case "updates":
		_, err := a.Updates(ctx)
		return err
	case "run":
		return a.Run(ctx, *interval)
	default:
		fmt.Fprintln(errOut, usage)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
}
