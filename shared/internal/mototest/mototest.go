// Package mototest starts moto in server mode for tests that talk to AWS
// through the real aws-sdk-go-v2 clients.
//
// Run points the standard AWS environment variables (AWS_ENDPOINT_URL,
// AWS_REGION, static credentials) at the server, so adapter tests build their
// clients with config.LoadDefaultConfig, exactly as the Lambda shape does.
package mototest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/internal/testproc"
)

// Server is a running moto server.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
}

// Run starts moto, sets the AWS environment for it, runs the package's
// tests and stops moto. Use it as TestMain's body: os.Exit(mototest.Run(m)).
// A missing moto is a failure, never a skip: `make tools` installs it.
func Run(m *testing.M) int {
	srv, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mototest:", err)
		return 1
	}
	defer srv.Stop()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL":            srv.Endpoint,
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "testing",
		"AWS_SECRET_ACCESS_KEY":       "testing",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		os.Setenv(k, v)
	}
	return m.Run()
}

// Start launches moto_server on a free loopback port and waits until it
// answers. The binary is $MOTO_SERVER, or .venv/bin/moto_server in the
// module root.
func Start() (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	port, err := testproc.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Getenv("MOTO_LOG") == "" {
		cmd.Stdout, cmd.Stderr = nil, nil
	} else {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	srv := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(srv.Endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return srv, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Stop()
	return nil, fmt.Errorf("moto_server did not answer on %s within 30s", srv.Endpoint)
}

// Stop ends the server and its children.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Wait()
	}
}

func binary() (string, error) { return testproc.VenvBinary("MOTO_SERVER", "moto_server") }
