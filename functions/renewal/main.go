// Command renewal is the renewal scheduler's Lambda function: an
// EventBridge schedule invokes it, and it queues a renewal check for every
// certificate whose check is due.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartRenewal() }
