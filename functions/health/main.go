// Command health is the health route group's Lambda function: GET /health.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).HealthHandler) }
