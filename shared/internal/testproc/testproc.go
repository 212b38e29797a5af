// Package testproc holds what the harnesses that start real servers for
// tests (moto, Pebble, an SMTP server) share: a free loopback port and the
// module root, where the project's tools live.
package testproc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ModuleRoot is the directory of the go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// VenvBinary is a program of the project's Python venv (made by `make
// tools`): the path in $envVar if set, else <module root>/.venv/bin/name.
func VenvBinary(envVar, name string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".venv", "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", errors.New(p + " not found: run `make tools` (or set " + envVar + ")")
	}
	return p, nil
}
