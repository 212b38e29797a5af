//go:build unix

package agent

import (
	"os/exec"
	"syscall"
)

// killGroup starts cmd in its own process group and makes its
// cancellation (timeout, shutdown) kill the whole group, so a shell's
// children do not outlive it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
