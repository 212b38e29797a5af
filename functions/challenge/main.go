// Command challenge is the Lambda function that answers CAs' HTTP-01
// challenges (/.well-known/acme-challenge/:token).
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
	lambda.Start(app.HTTPLambda(a.ChallengeHandler()))
}
