package swring

import (
	"os"
	"path/filepath"
)

// init starts an in-process fake engine for Example (the example_test package reads the
// socket path through exampleSocketPath).
func init() {
	if os.Getenv("SWRING_FAKE_ENGINE") != "" {
		return
	}
	dir, err := os.MkdirTemp("", "swrex")
	if err != nil {
		return
	}
	ExampleSocketPath = filepath.Join(dir, "engine.sock")
	e := newFakeEngine(ExampleSocketPath)
	if e.start() != nil {
		ExampleSocketPath = ""
	}
}

// ExampleSocketPath is set by the tests only (this file is a _test.go file).
var ExampleSocketPath string
