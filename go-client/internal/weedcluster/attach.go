package weedcluster

import (
	"net/http"
	"time"
)

// Attach returns a Cluster for a master that this process did not start, so that it can run
// readers on it (StartFiler, StartMount, StartS3): the bench's measuring processes start the
// front end they measure on the weed host's cluster. Their processes and files go under dir;
// Stop ends those only (Volumes is empty, and the master and volume servers are not touched).
func Attach(master, weed, dir string) *Cluster {
	return &Cluster{Master: master, Weed: weed, Dir: dir, http: &http.Client{Timeout: 30 * time.Second}}
}
