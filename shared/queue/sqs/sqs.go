// Package sqs is the queue port's Amazon SQS adapter, for the cloud shape:
// a standard queue whose redrive policy names a dead-letter queue.
//
// The queue's own settings carry the semantics: its VisibilityTimeout is the
// port's visibility timeout and its RedrivePolicy's maxReceiveCount the
// port's MaxReceiveCount (template.yaml and localstack/ declare both). The
// queue's DelaySeconds and ReceiveMessageWaitTimeSeconds should be 0, and its
// MaximumMessageSize at least 350 KiB (the default 1 MiB is fine), because
// bodies that are not SQS-safe text travel base64-encoded.
//
// Wire format, shared with LambdaHandler: the body is the message body when
// it is valid UTF-8 made of characters SQS accepts, otherwise its base64
// encoding with the message attribute "body-encoding" = "base64" (an empty
// body is sent as "-" with "body-encoding" = "empty"); the kind is
// the message attribute "kind"; a redriven message carries its original ID
// in "original-id", so IDs stay the same across redrives. A received message
// that does not follow this format is never returned: it is left in flight
// and, like any unacknowledged message, ends in the dead-letter queue.
//
// SQS timers have one-second granularity: delays, retry delays and waits
// are rounded up to whole seconds.
package sqs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/certfleet/certfleet/shared/queue"
)

// Message attribute names of the wire format.
const (
	attrKind       = "kind"
	attrEncoding   = "body-encoding"
	attrOriginalID = "original-id"
	encodingBase64 = "base64"
	encodingEmpty  = "empty"
)

// maxWait is the longest long poll SQS accepts.
const maxWait = 20 * time.Second

// deadHide is how long ListDead and Redrive keep the dead-letter messages
// they have seen invisible, so that one pass sees each message once.
const deadHide = 30 * time.Second

var receiveAttrNames = []string{attrKind, attrEncoding, attrOriginalID}

// Queue is an SQS queue with its dead-letter queue. Safe for concurrent use.
type Queue struct {
	client *sqs.Client
	url    string
	dlq    string
}

var _ queue.Queue = (*Queue)(nil)

// New returns the queue at queueURL whose redrive policy sends dead letters
// to deadLetterURL. An empty deadLetterURL makes ListDead and Redrive fail.
func New(client *sqs.Client, queueURL, deadLetterURL string) *Queue {
	return &Queue{client: client, url: queueURL, dlq: deadLetterURL}
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int32 {
	return int32((d + time.Second - 1) / time.Second)
}

// sqsSafe reports whether b can be an SQS message body as it is: UTF-8
// text of #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
func sqsSafe(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		switch {
		case r == 0x9, r == 0xA, r == 0xD:
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default:
			return false
		}
	}
	return true
}

func strAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

// encode gives the wire body and attributes of m; originalID is set on
// redrive.
func encode(m queue.Message, originalID string) (string, map[string]types.MessageAttributeValue) {
	attrs := map[string]types.MessageAttributeValue{attrKind: strAttr(m.Kind)}
	body := string(m.Body)
	switch {
	case len(m.Body) == 0: // SQS refuses an empty body
		body = "-"
		attrs[attrEncoding] = strAttr(encodingEmpty)
	case !sqsSafe(m.Body):
		body = base64.StdEncoding.EncodeToString(m.Body)
		attrs[attrEncoding] = strAttr(encodingBase64)
	}
	if originalID != "" {
		attrs[attrOriginalID] = strAttr(originalID)
	}
	return body, attrs
}

// decode rebuilds a message from its SQS ID, body and attributes (given as
// a lookup of string attributes).
func decode(messageID, body string, attr func(string) (string, bool)) (queue.Message, error) {
	m := queue.Message{ID: messageID}
	kind, ok := attr(attrKind)
	if !ok || kind == "" {
		return m, errors.New("sqs: message has no kind attribute")
	}
	m.Kind = kind
	if id, ok := attr(attrOriginalID); ok && id != "" {
		m.ID = id
	}
	switch enc, _ := attr(attrEncoding); enc {
	case "":
		m.Body = []byte(body)
	case encodingEmpty:
	case encodingBase64:
		b, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return m, fmt.Errorf("sqs: message body: %w", err)
		}
		m.Body = b
	default:
		return m, fmt.Errorf("sqs: unknown body encoding %q", enc)
	}
	return m, nil
}

func fromSQS(sm types.Message) (queue.Delivery, error) {
	m, err := decode(aws.ToString(sm.MessageId), aws.ToString(sm.Body), func(name string) (string, bool) {
		a, ok := sm.MessageAttributes[name]
		if !ok || a.StringValue == nil {
			return "", false
		}
		return *a.StringValue, true
	})
	if err != nil {
		return queue.Delivery{}, err
	}
	attempt, err := receiveCount(sm.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	if err != nil {
		return queue.Delivery{}, err
	}
	return queue.Delivery{Message: m, Receipt: aws.ToString(sm.ReceiptHandle), Attempt: attempt}, nil
}

func receiveCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("sqs: bad ApproximateReceiveCount %q", s)
	}
	return n, nil
}

// Send sends m with DelaySeconds = delay rounded up to whole seconds and
// returns the SQS message ID. Errors: queue.ErrInvalid, or the SDK's.
func (q *Queue) Send(ctx context.Context, m queue.Message, delay time.Duration) (string, error) {
	if err := queue.Validate(m, delay); err != nil {
		return "", fmt.Errorf("sqs: send: %w", err)
	}
	return q.send(ctx, q.url, m, "", delay)
}

func (q *Queue) send(ctx context.Context, url string, m queue.Message, originalID string, delay time.Duration) (string, error) {
	body, attrs := encode(m, originalID)
	out, err := q.client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:          aws.String(url),
		MessageBody:       aws.String(body),
		DelaySeconds:      seconds(delay),
		MessageAttributes: attrs,
	})
	if err != nil {
		return "", fmt.Errorf("sqs: send: %w", err)
	}
	return aws.ToString(out.MessageId), nil
}

// Ping reads the queue's ARN (GetQueueAttributes). Errors: the SDK's.
func (q *Queue) Ping(ctx context.Context) error {
	_, err := q.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(q.url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return fmt.Errorf("sqs: ping: %w", err)
	}
	return nil
}

// Receive long-polls for up to max (at most queue.MaxReceiveBatch)
// messages, for wait rounded up to whole seconds (several polls when wait
// is over SQS's 20 s limit). Attempt is SQS's ApproximateReceiveCount.
// Errors: queue.ErrInvalid for max < 1 or wait < 0, or the SDK's (which
// include the context's).
func (q *Queue) Receive(ctx context.Context, max int, wait time.Duration) ([]queue.Delivery, error) {
	if max < 1 || wait < 0 {
		return nil, fmt.Errorf("sqs: receive: %w: max %d, wait %s", queue.ErrInvalid, max, wait)
	}
	max = min(max, queue.MaxReceiveBatch)
	deadline := time.Now().Add(wait)
	for {
		msgs, err := q.receive(ctx, q.url, max, min(time.Until(deadline), maxWait), 0)
		if err != nil {
			return nil, fmt.Errorf("sqs: receive: %w", err)
		}
		var ds []queue.Delivery
		for _, sm := range msgs {
			if d, err := fromSQS(sm); err == nil {
				ds = append(ds, d)
			}
		}
		// A poll of ceil(left) seconds covers the rest of the wait, so
		// poll again only when the last one was cut at maxWait.
		if len(ds) > 0 || time.Until(deadline) < time.Second {
			return ds, nil
		}
	}
}

func (q *Queue) receive(ctx context.Context, url string, n int, wait, hide time.Duration) ([]types.Message, error) {
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(url),
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             seconds(max(wait, 0)),
		MessageAttributeNames:       receiveAttrNames,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	}
	if hide > 0 {
		in.VisibilityTimeout = seconds(hide)
	}
	out, err := q.client.ReceiveMessage(ctx, in)
	if err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// expired reports whether err says a receipt is no longer usable: SQS
// answers so for receipts of messages already deleted, redelivered or moved
// to the dead-letter queue.
func expired(err error) bool {
	var invalid *types.ReceiptHandleIsInvalid
	var notInflight *types.MessageNotInflight
	return errors.As(err, &invalid) || errors.As(err, &notInflight)
}

// Ack deletes the message (DeleteMessage). A receipt SQS no longer
// recognises counts as expired and is not an error; a malformed one is
// therefore not reported either. Errors: the SDK's.
func (q *Queue) Ack(ctx context.Context, d queue.Delivery) error {
	_, err := q.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl:      aws.String(q.url),
		ReceiptHandle: aws.String(d.Receipt),
	})
	if err != nil && !expired(err) {
		return fmt.Errorf("sqs: ack: %w", err)
	}
	return nil
}

// Retry sets the message's visibility timeout to delay (0..queue.MaxDelay,
// rounded up to whole seconds) with ChangeMessageVisibility. An expired
// receipt is not an error. Errors: queue.ErrInvalid, or the SDK's.
func (q *Queue) Retry(ctx context.Context, d queue.Delivery, delay time.Duration) error {
	if delay < 0 || delay > queue.MaxDelay {
		return fmt.Errorf("sqs: retry: %w: delay %s outside 0..%s", queue.ErrInvalid, delay, queue.MaxDelay)
	}
	_, err := q.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(q.url),
		ReceiptHandle:     aws.String(d.Receipt),
		VisibilityTimeout: seconds(delay),
	})
	if err != nil && !expired(err) {
		return fmt.Errorf("sqs: retry: %w", err)
	}
	return nil
}

// ListDead receives up to max messages from the dead-letter queue, keeping
// each invisible while it lists, then makes them visible again
// (ChangeMessageVisibilityBatch to 0) without deleting any. It long-polls
// one second per batch, so it takes at least a second. Meanwhile a
// concurrent Redrive does not see the listed messages. Errors:
// queue.ErrInvalid for max < 1; the SDK's.
func (q *Queue) ListDead(ctx context.Context, max int) ([]queue.Message, error) {
	if max < 1 {
		return nil, fmt.Errorf("sqs: list dead: %w: max %d", queue.ErrInvalid, max)
	}
	if q.dlq == "" {
		return nil, errors.New("sqs: list dead: no dead-letter queue configured")
	}
	var (
		out      []queue.Message
		receipts []string
		seen     = map[string]bool{}
	)
	var err error
	for len(out) < max {
		var msgs []types.Message
		msgs, err = q.receive(ctx, q.dlq, min(max-len(out), queue.MaxReceiveBatch), time.Second, deadHide)
		if err != nil || len(msgs) == 0 {
			break
		}
		for _, sm := range msgs {
			receipts = append(receipts, aws.ToString(sm.ReceiptHandle))
			id := aws.ToString(sm.MessageId)
			if seen[id] {
				continue
			}
			seen[id] = true
			d, derr := fromSQS(sm)
			if derr != nil { // list it as it is, kind and all, for a person to look at
				d.Message = queue.Message{ID: id, Body: []byte(aws.ToString(sm.Body))}
			}
			if len(out) < max {
				out = append(out, d.Message)
			}
		}
	}
	// Make them visible again even if ctx has ended.
	if rerr := q.unhide(context.WithoutCancel(ctx), receipts); err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("sqs: list dead: %w", err)
	}
	return out, nil
}

func (q *Queue) unhide(ctx context.Context, receipts []string) error {
	for len(receipts) > 0 {
		n := min(len(receipts), 10)
		entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, n)
		for i, r := range receipts[:n] {
			entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{
				Id:                aws.String(strconv.Itoa(i)),
				ReceiptHandle:     aws.String(r),
				VisibilityTimeout: 0,
			}
		}
		receipts = receipts[n:]
		out, err := q.client.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{
			QueueUrl: aws.String(q.dlq),
			Entries:  entries,
		})
		if err != nil {
			return err
		}
		for _, f := range out.Failed {
			// Several receipts of one message (a duplicate delivery)
			// leave all but the newest not in flight; that is fine.
			if aws.ToString(f.Code) != "MessageNotInflight" && aws.ToString(f.Code) != "ReceiptHandleIsInvalid" {
				return fmt.Errorf("unhide dead letter: %s: %s", aws.ToString(f.Code), aws.ToString(f.Message))
			}
		}
	}
	return nil
}

// Redrive moves every message from the dead-letter queue to the main queue:
// for each, it sends a copy (same kind, body and ID, a fresh receive count)
// and then deletes the dead one, until a one-second long poll of the
// dead-letter queue comes back empty. A failure between the send and the
// delete leaves a message in both queues (delivery is at-least-once anyway).
// Returns how many were moved, also on error. Errors: the SDK's.
func (q *Queue) Redrive(ctx context.Context) (int, error) {
	if q.dlq == "" {
		return 0, errors.New("sqs: redrive: no dead-letter queue configured")
	}
	n := 0
	for {
		msgs, err := q.receive(ctx, q.dlq, queue.MaxReceiveBatch, time.Second, deadHide)
		if err != nil {
			return n, fmt.Errorf("sqs: redrive: %w", err)
		}
		if len(msgs) == 0 {
			return n, nil
		}
		for _, sm := range msgs {
			if err := q.redriveOne(ctx, sm); err != nil {
				return n, fmt.Errorf("sqs: redrive: %w", err)
			}
			n++
		}
	}
}

func (q *Queue) redriveOne(ctx context.Context, sm types.Message) error {
	// Copy the wire form as it is, so that even a malformed message moves.
	attrs := map[string]types.MessageAttributeValue{}
	for k, v := range sm.MessageAttributes {
		attrs[k] = v
	}
	if _, ok := attrs[attrOriginalID]; !ok {
		attrs[attrOriginalID] = strAttr(aws.ToString(sm.MessageId))
	}
	_, err := q.client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:          aws.String(q.url),
		MessageBody:       sm.Body,
		MessageAttributes: attrs,
	})
	if err != nil {
		return err
	}
	_, err = q.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl:      aws.String(q.dlq),
		ReceiptHandle: sm.ReceiptHandle,
	})
	if err != nil && !expired(err) {
		return err
	}
	return nil
}
