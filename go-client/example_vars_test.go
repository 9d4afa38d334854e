package swring_test

import swring "github.com/seaweed-ring/seaweed-ring/go-client"

var exampleSocket = swring.ExampleSocketPath
