package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
)

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// HealthTimeout bounds each dependency check of GET /health.
const HealthTimeout = 2 * time.Second

// HealthGroup is the health route group: GET /health answers 200 with the
// version and "ok" for every check, or 503 naming the checks that failed.
// Failure details go to the log only.
func HealthGroup(version string, checks map[string]Check) Group {
	return Group{Name: "health", Routes: []Route{{
		Method: http.MethodGet, Path: "/health",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			results := runChecks(r.Context(), checks)
			failed := false
			for name, err := range results {
				if err != nil {
					failed = true
					LoggerFrom(r.Context()).Warn("health check failed", "check", name, "err", err)
				}
			}
			report := map[string]any{"version": version}
			for name, err := range results {
				report[name] = "ok"
				if err != nil {
					report[name] = "unavailable"
				}
			}
			if failed {
				WriteErrorBody(w, r, apperr.New(apperr.Unavailable, "a dependency is unavailable"), report)
				return
			}
			report["status"] = "ok"
			WriteData(w, http.StatusOK, report)
		}),
	}}}
}

// runChecks runs every check concurrently, each within HealthTimeout.
func runChecks(ctx context.Context, checks map[string]Check) map[string]error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := make(map[string]error, len(checks))
	for name, check := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, HealthTimeout)
			defer cancel()
			err := check(cctx)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return results
}
