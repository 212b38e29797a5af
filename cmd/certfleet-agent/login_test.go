package main

import (
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/agent"
)

// lineWriter hands each written line to a channel.
type lineWriter struct {
	mu    sync.Mutex
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		select {
		case w.lines <- l:
		default:
		}
	}
	return len(p), nil
}

// TestAgentLoginDeviceCode logs in with the device authorization grant
// against the local server: the agent prints the verification line, the
// user approves with a browser session, the agent registers with the
// registration code and its session polls updates.
func TestAgentLoginDeviceCode(t *testing.T) {
	ctx := context.Background()
	a, srv, u := localServer(t, "browser@example.com")
	sess, err := a.Identity.StartSession(ctx, u)
	if err != nil {
		t.Fatal(err)
	}

	w := &lineWriter{lines: make(chan string, 100)}
	ag := agent.New(filepath.Join(t.TempDir(), "state"), w)
	done := make(chan error, 1)
	go func() { done <- ag.Login(ctx, agent.LoginOptions{Server: srv.URL}) }()
	var code string
	for code == "" {
		select {
		case l := <-w.lines:
			if m := regexp.MustCompile(`^Open (\S+) and approve code ([A-Z0-9]{4}-[A-Z0-9]{4})$`).FindStringSubmatch(l); m != nil {
				code = m[2]
			}
		case err := <-done:
			t.Fatalf("login ended before the approval: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no verification line")
		}
	}
	req, _ := http.NewRequest("POST", srv.URL+"/auth/device", strings.NewReader(`{"action":"device_verify","user_code":"`+code+`","approve":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: "cjj365", Value: sess.Token})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("device_verify: %d", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish")
	}
	if ag.DeviceID() == 0 {
		t.Fatal("no device id")
	}
	if d, err := a.Devices.Get(ctx, u.ID, ag.DeviceID()); err != nil || d.PublicID != ag.DevicePublicID() {
		t.Fatalf("device %+v %v", d, err)
	}
	if _, err := ag.Updates(ctx); err != nil {
		t.Fatal(err)
	}
}
