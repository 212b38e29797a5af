// Command worker is the issuance worker's Lambda function: SQS batches in,
// one step per message, failed messages reported as batchItemFailures.
package main

import (
	"context"
	"log"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/certfleet/certfleet/shared/app"
)

func main() {
	a, err := app.Lambda(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	lambda.Start(a.WorkerLambda())
}
