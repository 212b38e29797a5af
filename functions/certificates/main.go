// Command certificates is the Lambda function of seed 000's certificate routes.
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
	lambda.Start(app.HTTPLambda(a.CertificatesHandler()))
}
