package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/schedule"
	"github.com/certfleet/certfleet/shared/worker"
)

// Serve runs the local shape on ln until ctx is cancelled: every route
// group on one HTTP server, the worker loop and the scheduler loop. On
// cancel it stops accepting, lets in-flight requests and steps finish (up
// to Config.ShutdownTimeout), and returns. A step still running at the
// deadline is not acknowledged, so its message is redelivered after the
// visibility timeout: nothing is lost.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.Log.Handler(), slog.LevelWarn),
	}
	// The loops outlive ctx until the HTTP server has drained.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	var loops sync.WaitGroup
	loops.Go(func() {
		err := worker.Run(loopCtx, a.Queue, a.Steps, worker.Options{Concurrency: a.Config.WorkerConcurrency, Logger: a.Log})
		if err != nil {
			a.Log.Error("worker stopped", "err", err)
		}
	})
	loops.Go(func() { schedule.Loop(loopCtx, a.Jobs(), a.Log) })

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}

	a.Log.Info("shutting down: finishing in-flight requests and steps", "timeout", a.Config.ShutdownTimeout)
	deadline, cancel := context.WithTimeout(context.Background(), a.Config.ShutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(deadline)
	stopLoops()
	drained := make(chan struct{})
	go func() { loops.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-deadline.Done():
		a.Log.Warn("shutdown timeout: unfinished steps will be redelivered")
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return errors.Join(serveErr, shutdownErr)
}
