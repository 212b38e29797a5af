// Command certificates is the Lambda function of seed 000's certificate routes.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).CertificatesHandler) }
