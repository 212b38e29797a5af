//go:build !unix

package agent

import "os/exec"

// killGroup leaves cmd as it is: cancellation kills the process alone.
func killGroup(*exec.Cmd) {}
