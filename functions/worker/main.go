// Command worker is the issuance worker's Lambda function: SQS batches in,
// one step per message, failed messages reported as batchItemFailures.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartWorker() }
