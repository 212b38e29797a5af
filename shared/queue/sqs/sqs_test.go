package sqs_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/certfleet/certfleet/shared/internal/mototest"
	"github.com/certfleet/certfleet/shared/queue"
	"github.com/certfleet/certfleet/shared/queue/queuetest"
	"github.com/certfleet/certfleet/shared/queue/sqs"
)

func TestMain(m *testing.M) { os.Exit(mototest.Run(m)) }

var queueSeq atomic.Int64

func client(t *testing.T) *awssqs.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return awssqs.NewFromConfig(cfg)
}

// createQueues makes a fresh dead-letter queue and a main queue that
// redrives to it, as template.yaml declares them.
func createQueues(t *testing.T, c *awssqs.Client, cfg queuetest.Config) (mainURL, dlqURL string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("certfleet-test-%d-%d", os.Getpid(), queueSeq.Add(1))
	dlq, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := c.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{
		QueueUrl:       dlq.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := json.Marshal(map[string]any{
		"deadLetterTargetArn": attrs.Attributes[string(types.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     cfg.MaxReceiveCount,
	})
	main, err := c.CreateQueue(ctx, &awssqs.CreateQueueInput{
		QueueName: aws.String(name),
		Attributes: map[string]string{
			string(types.QueueAttributeNameVisibilityTimeout): strconv.Itoa(int((cfg.Visibility + time.Second - 1) / time.Second)),
			string(types.QueueAttributeNameRedrivePolicy):     string(policy),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range []*string{main.QueueUrl, dlq.QueueUrl} {
			_, _ = c.DeleteQueue(context.Background(), &awssqs.DeleteQueueInput{QueueUrl: u})
		}
	})
	return *main.QueueUrl, *dlq.QueueUrl
}

func TestConformance(t *testing.T) {
	// moto's ReceiveMessage marks a message received without a lock, so
	// concurrent receives now and then return one message twice; real SQS
	// standard queues promise at-least-once delivery only, too.
	queuetest.Run(t, queuetest.Guarantees{ExclusiveDelivery: false}, func(t *testing.T, cfg queuetest.Config) queue.Queue {
		c := client(t)
		mainURL, dlqURL := createQueues(t, c, cfg)
		return sqs.New(c, mainURL, dlqURL)
	})
}

func TestPingMissingQueue(t *testing.T) {
	c := client(t)
	mainURL, _ := createQueues(t, c, queuetest.Config{Visibility: time.Second, MaxReceiveCount: 1})
	q := sqs.New(c, mainURL+"-gone", "")
	if err := q.Ping(t.Context()); err == nil {
		t.Error("Ping of a missing queue succeeded")
	}
	if _, err := q.ListDead(t.Context(), 1); err == nil {
		t.Error("ListDead without a dead-letter queue succeeded")
	}
}

// TestLambdaRoundTrip sends through Queue.Send, takes the raw SQS messages
// as the Lambda service would, and feeds them to LambdaHandler as an event.
func TestLambdaRoundTrip(t *testing.T) {
	ctx := t.Context()
	c := client(t)
	mainURL, dlqURL := createQueues(t, c, queuetest.Config{Visibility: 30 * time.Second, MaxReceiveCount: 3})
	q := sqs.New(c, mainURL, dlqURL)
	want := map[string]queue.Message{}
	for _, m := range []queue.Message{
		{Kind: "order", Body: []byte(`{"issue":"iss_1"}`)},
		{Kind: "poll", Body: []byte{0xff, 0x00, 0x01}},
		{Kind: "announce"},
	} {
		id, err := q.Send(ctx, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		m.ID = id
		want[id] = m
	}
	var ev events.SQSEvent
	for len(ev.Records) < len(want) {
		out, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(mainURL),
			MaxNumberOfMessages:         10,
			WaitTimeSeconds:             1,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, sm := range out.Messages {
			rec := events.SQSMessage{
				MessageId:         *sm.MessageId,
				ReceiptHandle:     *sm.ReceiptHandle,
				Body:              *sm.Body,
				Attributes:        sm.Attributes,
				MessageAttributes: map[string]events.SQSMessageAttribute{},
			}
			for k, v := range sm.MessageAttributes {
				rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: *v.DataType, StringValue: v.StringValue}
			}
			ev.Records = append(ev.Records, rec)
		}
	}
	var got []queue.Delivery
	h := sqs.LambdaHandler(func(_ context.Context, d queue.Delivery) error {
		got = append(got, d)
		return nil
	})
	resp, err := h(ctx, ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("handler = %+v, %v; want no failures", resp, err)
	}
	if len(got) != len(want) {
		t.Fatalf("dispatched %d, want %d", len(got), len(want))
	}
	for _, d := range got {
		m := want[d.ID]
		if d.Kind != m.Kind || string(d.Body) != string(m.Body) || d.Attempt != 1 || d.Receipt == "" {
			t.Errorf("delivery %+v; want %+v attempt 1", d, m)
		}
	}
}

func record(id, kind, body string, attrs map[string]string) events.SQSMessage {
	rec := events.SQSMessage{
		MessageId:         id,
		ReceiptHandle:     "rh-" + id,
		Body:              body,
		Attributes:        map[string]string{"ApproximateReceiveCount": "2"},
		MessageAttributes: map[string]events.SQSMessageAttribute{},
	}
	if kind != "" {
		attrs = map[string]string{"kind": kind, "body-encoding": attrs["body-encoding"]}
	}
	for k, v := range attrs {
		if v != "" {
			rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: "String", StringValue: aws.String(v)}
		}
	}
	return rec
}

func TestLambdaHandlerPartialFailure(t *testing.T) {
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("m1", "order", `{"n":1}`, nil),
		record("m2", "present", base64.StdEncoding.EncodeToString([]byte{0, 1, 2}), map[string]string{"body-encoding": "base64"}),
		record("m3", "check", `{"n":3}`, nil),
	}}
	var got []queue.Delivery
	h := sqs.LambdaHandler(func(ctx context.Context, d queue.Delivery) error {
		got = append(got, d)
		if d.ID == "m2" {
			return errors.New("step failed")
		}
		return nil
	})
	resp, err := h(t.Context(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if want := []events.SQSBatchItemFailure{{ItemIdentifier: "m2"}}; !slices.Equal(resp.BatchItemFailures, want) {
		t.Fatalf("BatchItemFailures = %+v, want %+v", resp.BatchItemFailures, want)
	}
	if len(got) != 3 {
		t.Fatalf("dispatched %d records, want 3", len(got))
	}
	wantD := []queue.Delivery{
		{Message: queue.Message{ID: "m1", Kind: "order", Body: []byte(`{"n":1}`)}, Receipt: "rh-m1", Attempt: 2},
		{Message: queue.Message{ID: "m2", Kind: "present", Body: []byte{0, 1, 2}}, Receipt: "rh-m2", Attempt: 2},
		{Message: queue.Message{ID: "m3", Kind: "check", Body: []byte(`{"n":3}`)}, Receipt: "rh-m3", Attempt: 2},
	}
	for i, d := range got {
		w := wantD[i]
		if d.ID != w.ID || d.Kind != w.Kind || string(d.Body) != string(w.Body) || d.Receipt != w.Receipt || d.Attempt != w.Attempt {
			t.Errorf("record %d dispatched as %+v, want %+v", i, d, w)
		}
	}
}

func TestLambdaHandlerMalformedRecords(t *testing.T) {
	noCount := record("m4", "order", "{}", nil)
	delete(noCount.Attributes, "ApproximateReceiveCount")
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("m1", "", "{}", nil), // no kind
		record("m2", "order", "not base64!", map[string]string{"body-encoding": "base64"}),
		record("m3", "order", "{}", map[string]string{"body-encoding": "rot13"}),
		noCount,
		record("m5", "order", "{}", nil),
	}}
	var dispatched []string
	h := sqs.LambdaHandler(func(ctx context.Context, d queue.Delivery) error {
		dispatched = append(dispatched, d.ID)
		return nil
	})
	resp, err := h(t.Context(), ev)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	if !slices.Equal(failed, []string{"m1", "m2", "m3", "m4"}) || !slices.Equal(dispatched, []string{"m5"}) {
		t.Fatalf("failed %v, dispatched %v; want m1..m4 failed, m5 dispatched", failed, dispatched)
	}

	// A context that has ended fails every record without dispatching.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	dispatched = nil
	resp, _ = h(ctx, events.SQSEvent{Records: []events.SQSMessage{record("m6", "order", "{}", nil)}})
	if len(resp.BatchItemFailures) != 1 || len(dispatched) != 0 {
		t.Fatalf("after cancel: failures %+v, dispatched %v", resp.BatchItemFailures, dispatched)
	}
}
