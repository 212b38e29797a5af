// Command devices is the device route group's Lambda function: the device
// authorization grant, device registration and device management.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).DevicesHandler) }
