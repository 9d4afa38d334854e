package ring_test

import "github.com/seaweed-ring/seaweed-ring/go-client/ring"

var exampleSocket = ring.ExampleSocketPath
