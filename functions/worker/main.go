// Command worker is the issuance worker's Lambda function: SQS batches in,
// one step per message, failed messages reported as batchItemFailures. It
// is the only function that links lego's DNS providers (DNS-01).
package main

import (
	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/dns01"
)

func main() { app.StartWorker(app.WithDNS01(dns01.Solvers)) }
