// Command acmeaccounts is the Lambda function of seed 000's ACME account routes (/apiv1/users/:user_id/acme-accounts, /apiv1/me/acme-accounts) and the admin's CA providers.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).AcmeAccountsHandler) }
