// Command auth is the auth route group's Lambda function: /auth/*, API
// keys, the permission catalog and the admin user list.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).AuthHandler) }
