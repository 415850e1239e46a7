package testvm

import (
	"errors"
	"fmt"
	"os/exec"
)

// ErrHostDeps means a host program the harness needs is missing. Its text is
// the fix, so test failures print it verbatim.
var ErrHostDeps = errors.New("run `make deps` (integration/setup-host.sh) to install the host dependencies")

// lookTool finds a host program or says which package brings it.
func lookTool(name, debPackage string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH (Debian package %s): %w", name, debPackage, ErrHostDeps)
	}
	return p, nil
}
