// Command acmeaccounts is the Lambda function of seed 000's ACME account routes (/apiv1/users/:user_id/acme-accounts, /apiv1/me/acme-accounts) and the admin's CA providers.
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
	lambda.Start(app.HTTPLambda(a.AcmeAccountsHandler()))
}
