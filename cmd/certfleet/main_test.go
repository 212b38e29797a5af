package main

import (
	"context"
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
