// Package queue is the work-queue port: issuance and other background work
// travel as small messages, each carrying a kind that names the step handler
// that runs it.
//
// Delivery is at-least-once. A received message stays invisible for the
// queue's visibility timeout; if it is not acknowledged by then it is
// delivered again. After MaxReceiveCount receives without an acknowledgement
// it moves to the dead-letter list, from which it can be listed and redriven.
//
// Adapters: queue/local (durable in the bbolt file) and queue/sqs (Amazon SQS
// with a redrive policy). Both pass queue/queuetest.
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limits shared by every adapter, chosen to fit SQS's.
const (
	MaxDelay = 15 * time.Minute
	// MaxBodyBytes leaves room for queue/sqs to base64-encode a binary
	// body within SQS's 256 KiB message limit.
	MaxBodyBytes = 192 * 1024
	MaxKindBytes = 64
	// MaxReceiveBatch is the most messages one Receive returns.
	MaxReceiveBatch = 10
)

// ErrInvalid: a message or request outside the limits; nothing was sent.
var ErrInvalid = errors.New("queue: invalid request")

// Message is one unit of work.
type Message struct {
	// ID is assigned by the queue on Send.
	ID   string
	Kind string
	Body []byte
}

// Delivery is a received message.
type Delivery struct {
	Message
	// Receipt identifies this delivery for Ack and Retry.
	Receipt string
	// Attempt counts deliveries of this message, 1 on the first.
	Attempt int
}

// Sender puts messages on a queue. Safe for concurrent use.
type Sender interface {
	// Send enqueues m, to become visible after delay (0..MaxDelay), and
	// returns its ID. Errors: ErrInvalid, or the transport's error.
	Send(ctx context.Context, m Message, delay time.Duration) (string, error)
	// Ping reports whether the queue answers.
	Ping(ctx context.Context) error
}

// Receiver takes messages off a queue. Safe for concurrent use.
type Receiver interface {
	// Receive returns up to max (1..MaxReceiveBatch) visible messages,
	// waiting up to wait (>= 0) for the first one; an empty result with a
	// nil error means none came. A message that has used up its receives
	// moves to the dead-letter list on the next Receive. Errors:
	// ErrInvalid, or the transport's error.
	Receive(ctx context.Context, max int, wait time.Duration) ([]Delivery, error)
	// Ack removes a delivered message for good. Acking a receipt that has
	// expired (the message was redelivered) is not an error.
	Ack(ctx context.Context, d Delivery) error
	// Retry makes a delivered message visible again after delay
	// (0..MaxDelay, else ErrInvalid), a backoff instead of waiting out the
	// visibility timeout. An expired receipt is a no-op.
	Retry(ctx context.Context, d Delivery, delay time.Duration) error
}

// DeadLetters inspects and redrives the dead-letter list.
type DeadLetters interface {
	// ListDead returns up to max dead messages without removing them.
	ListDead(ctx context.Context, max int) ([]Message, error)
	// Redrive moves every dead message back to the main queue with its ID
	// kept and a fresh receive count, and returns how many moved.
	Redrive(ctx context.Context) (int, error)
}

// Queue is everything an adapter provides.
type Queue interface {
	Sender
	Receiver
	DeadLetters
}

// Validate checks a message and delay against the shared limits.
func Validate(m Message, delay time.Duration) error {
	switch {
	case m.Kind == "" || len(m.Kind) > MaxKindBytes:
		return fmt.Errorf("%w: kind must be 1..%d bytes", ErrInvalid, MaxKindBytes)
	case len(m.Body) > MaxBodyBytes:
		return fmt.Errorf("%w: body of %d bytes is over %d", ErrInvalid, len(m.Body), MaxBodyBytes)
	case delay < 0 || delay > MaxDelay:
		return fmt.Errorf("%w: delay %s outside 0..%s", ErrInvalid, delay, MaxDelay)
	}
	return nil
}
