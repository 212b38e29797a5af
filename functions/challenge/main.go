// Command challenge is the Lambda function that answers CAs' HTTP-01
// challenges (/.well-known/acme-challenge/:token).
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).ChallengeHandler) }
