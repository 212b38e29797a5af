package app_test

import (
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/config"
)

// TestLocalServerRegistersAnACMEAccount registers an account through the
// seed 004 routes: the HTTP route queues the step and the server's own
// worker loop completes it at Pebble.
func TestLocalServerRegistersAnACMEAccount(t *testing.T) {
	s := startLiveServer(t, config.Local)
	defer s.stop()
	if code := s.call("POST", "/api/v1/acme/account/create", `{"providerName":"letsencrypt","email":"ops@example.com"}`, nil); code != 200 {
		t.Fatalf("create: %d", code)
	}
	var list struct {
		Items []struct {
			Status     string
			AccountURL string `json:"accountUrl"`
		}
	}
	s.waitFor("the account to register", func() bool {
		s.call("GET", "/api/v1/acme/accounts", "", &list)
		return len(list.Items) == 1 && list.Items[0].Status == "active"
	})
	if !strings.HasPrefix(list.Items[0].AccountURL, strings.TrimSuffix(s.pebble.DirectoryURL, "/dir")) {
		t.Fatalf("account URL %q is not Pebble's", list.Items[0].AccountURL)
	}
}
