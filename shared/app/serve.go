package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/schedule"
	"github.com/certfleet/certfleet/shared/tlsalpn"
	"github.com/certfleet/certfleet/shared/worker"
)

// Serve runs the local shape on ln until ctx is cancelled: every route
// group on one HTTP server, the worker loop and the scheduler loop. On
// cancel it stops accepting, lets in-flight requests and steps finish (up
// to Config.ShutdownTimeout), and returns. A step still running at the
// deadline is not acknowledged, so its message is redelivered after the
// visibility timeout: nothing is lost.
//
// When Config.TLSALPNAddr is set, Serve also answers TLS-ALPN-01 challenges
// there (from the issuance service's pending challenges), and stops that
// listener with the HTTP server: no new connections once ctx ends, the
// handshakes in flight finish (each is bounded by
// tlsalpn.HandshakeTimeout) within the shutdown timeout. A listen failure
// there is returned before anything starts; ln is closed in every case.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	var alpnLn net.Listener
	if addr := a.Config.TLSALPNAddr; addr != "" {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("tls-alpn-01 responder: listen on %s: %w (set CERTFLEET_TLSALPN_ADDR to another address, or empty to not answer TLS-ALPN-01)", addr, err)
		}
		alpnLn = l
	}
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

	// The responder stops accepting at shutdown, like the HTTP server; its
	// handshakes in flight finish on their own deadline.
	alpnCtx, stopALPN := context.WithCancel(context.WithoutCancel(ctx))
	defer stopALPN()
	var alpnDone chan error // nil (never ready) without a responder
	if alpnLn != nil {
		alpnDone = make(chan error, 1)
		responder := tlsalpn.New(a.tlsalpnSource(), a.Log)
		a.Log.Info("answering TLS-ALPN-01 challenges", "addr", alpnLn.Addr().String())
		go func() { alpnDone <- responder.Serve(alpnCtx, alpnLn) }()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr, alpnErr error
	alpnStopped := alpnDone == nil
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	case alpnErr = <-alpnDone:
		alpnStopped = true
		a.Log.Error("tls-alpn-01 responder stopped", "err", alpnErr)
	}

	a.Log.Info("shutting down: finishing in-flight requests and steps", "timeout", a.Config.ShutdownTimeout)
	deadline, cancel := context.WithTimeout(context.Background(), a.Config.ShutdownTimeout)
	defer cancel()
	stopALPN()
	shutdownErr := srv.Shutdown(deadline)
	stopLoops()
	if !alpnStopped {
		select {
		case alpnErr = <-alpnDone:
		case <-deadline.Done():
			a.Log.Warn("shutdown timeout: TLS-ALPN-01 handshakes still in flight")
		}
	}
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
	return errors.Join(serveErr, shutdownErr, alpnErr)
}

// tlsalpnSource is where the TLS-ALPN-01 responder finds the key
// authorizations of pending challenges.
func (a *App) tlsalpnSource() tlsalpn.Source { return a.Issuance }
