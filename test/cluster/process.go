package cluster

import (
	"errors"
	"strings"
)

func isPortClash(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// errExited is returned by the readiness loops when the program died.
var errExited = errors.New("process exited before it was ready")
