package sqs

import (
	"context"
	"errors"

	"github.com/aws/aws-lambda-go/events"

	"github.com/certfleet/certfleet/shared/queue"
)

// LambdaHandler adapts dispatch to an SQS event source mapping, for the
// worker function in the cloud shape. Each record becomes a queue.Delivery
// in the wire format that Queue.Send writes (kind from the "kind" attribute,
// Attempt from ApproximateReceiveCount, Receipt the receipt handle), and the
// records are dispatched one after another. The response lists, as batch
// item failures, exactly the records whose dispatch returned an error, that
// do not follow the wire format, or that were not reached before ctx ended;
// Lambda deletes the others. The event source mapping must enable
// ReportBatchItemFailures, or a partial failure would count as success.
// The returned error is always nil.
func LambdaHandler(dispatch func(context.Context, queue.Delivery) error) func(context.Context, events.SQSEvent) (events.SQSEventResponse, error) {
	return func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
		resp := events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{}}
		for _, rec := range ev.Records {
			err := ctx.Err()
			if err == nil {
				var d queue.Delivery
				if d, err = fromRecord(rec); err == nil {
					err = dispatch(ctx, d)
				}
			}
			if err != nil {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: rec.MessageId})
			}
		}
		return resp, nil
	}
}

func fromRecord(rec events.SQSMessage) (queue.Delivery, error) {
	if rec.MessageId == "" {
		return queue.Delivery{}, errors.New("sqs: record has no message ID")
	}
	m, err := decode(rec.MessageId, rec.Body, func(name string) (string, bool) {
		a, ok := rec.MessageAttributes[name]
		if !ok || a.StringValue == nil {
			return "", false
		}
		return *a.StringValue, true
	})
	if err != nil {
		return queue.Delivery{}, err
	}
	attempt, err := receiveCount(rec.Attributes["ApproximateReceiveCount"])
	if err != nil {
		return queue.Delivery{}, err
	}
	return queue.Delivery{Message: m, Receipt: rec.ReceiptHandle, Attempt: attempt}, nil
}
