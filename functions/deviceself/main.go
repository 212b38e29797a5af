// Command deviceself is the device-self route group's Lambda function
// (/apiv1/devices/self/*): the agent's update polls, certificate details,
// deploy materials, install config and notify.
package main

import "github.com/certfleet/certfleet/shared/app"

func main() { app.StartHTTP((*app.App).DeviceSelfHandler) }
