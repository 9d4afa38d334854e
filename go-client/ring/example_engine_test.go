package ring

import (
	"os"
	"path/filepath"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/fakeengine"
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
	e := fakeengine.New(ExampleSocketPath)
	if e.Start() != nil {
		ExampleSocketPath = ""
	}
}

// ExampleSocketPath is set by the tests only (this file is a _test.go file).
var ExampleSocketPath string
