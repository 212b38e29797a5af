// Command acmeapi is the Lambda function of seed 004's ACME account API (/api/v1/acme/*).
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).AcmeAPIHandler) }
