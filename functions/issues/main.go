// Command issues is the Lambda function of the certificate issue routes
// (POST and GET .../certificates/:certificate_id/issues).
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).IssuesHandler) }
