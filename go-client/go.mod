module github.com/seaweed-ring/seaweed-ring/go-client

go 1.26.8

require golang.org/x/sys v0.50.0
