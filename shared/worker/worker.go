// Package worker runs queued work: a Registry maps each message kind to the
// Handler for it, and Run is the local shape's loop that takes messages off a
// queue.Receiver and dispatches them. In the cloud shape the same Registry's
// Dispatch is handed to queue/sqs.LambdaHandler instead of Run.
//
// A handler runs one short, idempotent step. Delivery is at-least-once, so a
// handler may see a message again after it succeeded (an acknowledgement
// lost, a visibility timeout overrun) and must then do nothing harmful.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/certfleet/certfleet/shared/queue"
)

// Handler runs the step a delivered message asks for. A nil error means
// done: the message is acknowledged. An error means try again later: the
// message is retried with backoff until the queue's MaxReceiveCount sends it
// to the dead-letter list; d.Attempt lets a step tell its last try.
type Handler func(ctx context.Context, m queue.Delivery) error

// Registry maps message kinds to handlers. The zero value is empty and ready
// to use. Register during setup; Dispatch is safe for concurrent use, also
// with Register.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]Handler
}

// Register makes h the handler for kind. It panics if kind is empty, h is
// nil, or kind already has a handler: those are programming errors.
func (r *Registry) Register(kind string, h Handler) {
	if kind == "" || h == nil {
		panic("worker: Register needs a kind and a handler")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[kind]; dup {
		panic(fmt.Sprintf("worker: kind %q registered twice", kind))
	}
	if r.handlers == nil {
		r.handlers = map[string]Handler{}
	}
	r.handlers[kind] = h
}

// Dispatch runs the handler registered for d's kind and returns its error
// unchanged, or an error naming the kind if none is registered.
func (r *Registry) Dispatch(ctx context.Context, d queue.Delivery) error {
	r.mu.RLock()
	h, ok := r.handlers[d.Kind]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("worker: no handler for kind %q", d.Kind)
	}
	return h(ctx, d)
}

// Options tunes Run.
type Options struct {
	// Concurrency is how many handlers may run at once; 0 means 1.
	Concurrency int
	// Backoff gives the delay before a failed message is delivered again,
	// from the attempt that failed (1 on the first delivery). Results are
	// clamped to 0..queue.MaxDelay. Nil means DefaultBackoff.
	Backoff func(attempt int) time.Duration
	// Logger receives one record per failure (kind, id, attempt, error;
	// never the body). Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultBackoff waits 1s after the first failed attempt and doubles for
// each further one, up to 5 minutes.
func DefaultBackoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	if attempt > 9 {
		return 5 * time.Minute
	}
	return min(time.Second<<(attempt-1), 5*time.Minute)
}

const (
	// pollWait is how long one Receive waits for work.
	pollWait = 20 * time.Second
	// settleTimeout bounds one Ack or Retry call.
	settleTimeout = 30 * time.Second
	// maxErrorPause caps the pause after repeated Receive errors.
	maxErrorPause = 30 * time.Second
)

// Run receives messages from r and dispatches them through reg, at most
// opts.Concurrency at a time, until ctx ends. A message whose handler
// succeeds is acknowledged; one whose handler fails (or panics) is retried
// after opts.Backoff(attempt) and logged. Receive errors are logged and
// retried with a growing pause, so a queue outage does not end Run.
//
// When ctx ends, Run stops receiving and waits for the handlers already
// running, then returns nil. Handlers, and the Ack or Retry after them, get
// a context that carries ctx's values but is not cancelled with it, so a
// step that has started completes and is settled. Run returns an error only
// for a nil receiver or registry.
func Run(ctx context.Context, r queue.Receiver, reg *Registry, opts Options) error {
	if r == nil || reg == nil {
		return errors.New("worker: Run needs a receiver and a registry")
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &runner{r: r, reg: reg, opts: opts, ctx: context.WithoutCancel(ctx)}

	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, opts.Concurrency) // one token per running handler
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	pause := time.Duration(0)
	for {
		if ctx.Err() != nil {
			return nil
		}
		// Wait for one free slot, then take every other free one, so a
		// single Receive fills them.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := 1
	fill:
		for n < min(opts.Concurrency, queue.MaxReceiveBatch) {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break fill
			}
		}

		ds, err := r.Receive(ctx, n, pollWait)
		if err != nil {
			release(n)
			if ctx.Err() != nil {
				return nil
			}
			pause = min(max(2*pause, time.Second), maxErrorPause)
			opts.Logger.ErrorContext(ctx, "worker: receive failed", "error", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		pause = 0
		if len(ds) < n {
			release(n - len(ds))
		}
		for i, d := range ds {
			if i >= n { // more than asked for: wait for room all the same
				slots <- struct{}{}
			}
			wg.Go(func() {
				defer release(1)
				w.handle(d)
			})
		}
	}
}

type runner struct {
	r    queue.Receiver
	reg  *Registry
	opts Options
	ctx  context.Context // not cancelled by Run's ctx
}

// handle dispatches one delivery and settles it.
func (w *runner) handle(d queue.Delivery) {
	log := w.opts.Logger.With("kind", d.Kind, "id", d.ID, "attempt", d.Attempt)
	start := time.Now()
	err := w.dispatch(d)
	settle, cancel := context.WithTimeout(w.ctx, settleTimeout)
	defer cancel()
	if err == nil {
		if aerr := w.r.Ack(settle, d); aerr != nil {
			log.ErrorContext(settle, "worker: ack failed; the step may run again", "error", aerr)
		}
		return
	}
	delay := min(max(w.opts.Backoff(d.Attempt), 0), queue.MaxDelay)
	log.WarnContext(settle, "worker: step failed", "error", err, "retry_in", delay, "took", time.Since(start))
	if rerr := w.r.Retry(settle, d, delay); rerr != nil {
		log.ErrorContext(settle, "worker: retry failed; the message returns after its visibility timeout", "error", rerr)
	}
}

// dispatch runs the handler, turning a panic into an error.
func (w *runner) dispatch(d queue.Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("worker: handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return w.reg.Dispatch(w.ctx, d)
}
