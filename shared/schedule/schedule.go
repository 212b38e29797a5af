// Package schedule runs periodic jobs: in the local shape as a goroutine
// loop, in the cloud shape from an EventBridge schedule that invokes the
// same job functions.
package schedule

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Job is one periodic task. Run must be idempotent: a tick may repeat
// after a crash.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Loop runs every job once at start and then every job.Every, until ctx is
// cancelled; a run in progress then finishes (its context is not
// cancelled) before Loop returns. A failing run is logged and retried on
// its next tick.
func Loop(ctx context.Context, jobs []Job, log *slog.Logger) {
	var wg sync.WaitGroup
	for _, job := range jobs {
		wg.Go(func() {
			ticker := time.NewTicker(job.Every)
			defer ticker.Stop()
			for {
				runOnce(context.WithoutCancel(ctx), job, log)
				select {
				case <-ctx.Done():
					return
				case <-ticker.C:
				}
			}
		})
	}
	wg.Wait()
}

func runOnce(ctx context.Context, job Job, log *slog.Logger) {
	start := time.Now()
	if err := job.Run(ctx); err != nil {
		log.Error("scheduled job failed", "job", job.Name, "err", err, "duration_ms", time.Since(start).Milliseconds())
	}
}
