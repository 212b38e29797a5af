// Command cas is the private CA route group's Lambda function.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).CAsHandler) }
