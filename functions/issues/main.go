// Command issues is the Lambda function of the certificate issue routes
// (POST and GET .../certificates/:certificate_id/issues).
package main

import (
	"context"
	"log"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/certfleet/certfleet/shared/app"
)

func main() {
	a, err := app.Lambda(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	lambda.Start(app.HTTPLambda(a.IssuesHandler()))
}
