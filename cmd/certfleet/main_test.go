package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/config"
)

func TestAdminCreateUser(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CERTFLEET_DATA", dir)
	t.Setenv("CERTFLEET_LOG_LEVEL", "error")
	if err := admin([]string{"create-user", "--email", "root@example.com", "--admin"}, strings.NewReader("Admin1Password\n")); err != nil {
		t.Fatal(err)
	}
	err := admin([]string{"create-user", "--email", "root@example.com"}, strings.NewReader("Admin1Password\n"))
	if err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second create: %v", err)
	}
	err = admin([]string{"create-user", "--email", "weak@example.com"}, strings.NewReader("weak\n"))
	if err == nil || !strings.Contains(err.Error(), "at least 8 characters") {
		t.Fatalf("weak password: %v", err)
	}
	if err := admin([]string{"delete-user"}, strings.NewReader("")); err == nil {
		t.Fatal("unknown admin command accepted")
	}

	cfg, err := config.Load(config.Local, func(k string) string { return map[string]string{"CERTFLEET_DATA": dir}[k] })
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Local(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	u, _, err := a.Identity.Login(context.Background(), "root@example.com", "Admin1Password", "192.0.2.1")
	if err != nil || !u.IsAdmin() || u.Status != "active" {
		t.Fatalf("the created admin cannot log in: %+v %v", u, err)
	}
}

func TestAdminWorkerToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CERTFLEET_DATA", dir)
	t.Setenv("CERTFLEET_LOG_LEVEL", "error")
	// The token printed is the one the server accepts.
	out := captureStdout(t, func() {
		if err := admin([]string{"worker-token"}, strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
	})
	token := strings.TrimSpace(out)
	cfg, err := config.Load(config.Local, func(k string) string { return map[string]string{"CERTFLEET_DATA": dir}[k] })
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Local(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if p, err := a.Identity.WorkerPrincipal(context.Background(), token); err != nil || p.Kind != "worker" {
		t.Fatalf("printed token %q: %+v, %v", token, p, err)
	}
}

// captureStdout returns what fn prints.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = old }()
	fn()
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out)
}
