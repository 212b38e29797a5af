package schedule_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/schedule"
)

func TestLoopRunsJobsUntilCancelledAndFinishesTheRunInProgress(t *testing.T) {
	var fast, failing atomic.Int32
	release := make(chan struct{})
	var slowFinished atomic.Bool
	slowStarted := make(chan struct{})
	jobs := []schedule.Job{
		{Name: "fast", Every: 10 * time.Millisecond, Run: func(context.Context) error { fast.Add(1); return nil }},
		{Name: "failing", Every: 10 * time.Millisecond, Run: func(context.Context) error { failing.Add(1); return errors.New("boom") }},
		{Name: "slow", Every: time.Hour, Run: func(ctx context.Context) error {
			close(slowStarted)
			<-release
			slowFinished.Store(ctx.Err() == nil)
			return nil
		}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { schedule.Loop(ctx, jobs, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()

	<-slowStarted
	time.Sleep(60 * time.Millisecond)
	cancel()
	select {
	case <-done:
		t.Fatal("Loop returned while a run was in progress")
	case <-time.After(30 * time.Millisecond):
	}
	close(release)
	<-done
	if !slowFinished.Load() {
		t.Fatal("the run in progress saw a cancelled context")
	}
	if fast.Load() < 3 || failing.Load() < 3 {
		t.Fatalf("jobs ran %d and %d times; want ticks to continue after failures", fast.Load(), failing.Load())
	}
	after := fast.Load()
	time.Sleep(30 * time.Millisecond)
	if fast.Load() != after {
		t.Fatal("a job ran after Loop returned")
	}
}
