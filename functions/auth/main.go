// Command auth is the auth route group's Lambda function: /auth/*, API
// keys, the permission catalog and the admin user list.
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
	lambda.Start(app.HTTPLambda(a.AuthHandler()))
}
