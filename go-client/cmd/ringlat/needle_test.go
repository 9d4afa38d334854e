package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A needle-mode ringlat without an engine: the HTTP path is verified against the upload's
// hash before the ready line, then timed block by block into a reused buffer.
func TestServeNeedleHTTPWithoutEngine(t *testing.T) {
	data := []byte(strings.Repeat("needle bytes ", 400))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/3,01637037d6" {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	defer srv.Close()
	sum := sha256.Sum256(data)
	target := &needleTarget{volume: strings.TrimPrefix(srv.URL, "http://"), fid: "3,01637037d6", size: len(data), sha256: hex.EncodeToString(sum[:])}

	in := strings.NewReader("block needle-http 1000000 5000000\nblock needle-http 0 2000000\nquit\n")
	var out strings.Builder
	if err := serve(nil, in, &out, serveConfig{batch: 1, core: -1, name: "needle.read.test.http", needle: target}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Scan()
	var r ready
	if err := json.Unmarshal(sc.Bytes(), &r); err != nil || !r.Ready || r.Session != nil || r.Needle == nil || !r.Needle.Verified || r.Needle.Bytes != len(data) {
		t.Fatalf("ready line %s (%v)", sc.Text(), err)
	}
	for i := 0; i < 2; i++ {
		if !sc.Scan() {
			t.Fatalf("block %d: no answer in %q", i, out.String())
		}
		var b blockResult
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil || b.Scenario != "needle.read.test.http" || b.Samples == 0 || b.Ops < b.Samples || b.Mallocs == 0 {
			t.Fatalf("block %d: %s (%v)", i, sc.Text(), err)
		}
	}

	// Other bytes than the upload's: refused before the ready line.
	target.sha256 = strings.Repeat("0", 64)
	out.Reset()
	err := serve(nil, strings.NewReader("quit\n"), &out, serveConfig{core: -1, name: "x", needle: target})
	if err == nil || !strings.Contains(out.String(), `"ready":false`) || !strings.Contains(out.String(), "SHA-256") {
		t.Fatalf("mismatch not refused: %v, %s", err, out.String())
	}
	// A ring block without an engine is an error answer, not a crash.
	target.sha256 = hex.EncodeToString(sum[:])
	out.Reset()
	err = serve(nil, strings.NewReader("block needle-ring 0 1000\n"), &out, serveConfig{core: -1, name: "x", needle: target})
	if err == nil || !strings.Contains(out.String(), `"error"`) {
		t.Fatalf("ring block without engine: %v, %s", err, out.String())
	}
}

// -conc: the needle-http block runs 8 goroutines on one http.Client. Their first reads (the
// bytes check) must be in flight at once: the server holds each of them until all 8 came.
func TestServeNeedleHTTPConcurrent(t *testing.T) {
	const conc = 8
	data := []byte(strings.Repeat("concurrent needle ", 300))
	var gets atomic.Int64
	all := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// GET 1 is the ready check; 2..conc+1 the readers' checks.
		if n := gets.Add(1); n >= 2 && n <= conc+1 {
			if n == conc+1 {
				close(all)
			}
			select {
			case <-all:
			case <-time.After(10 * time.Second):
				http.Error(w, "the readers' first GETs did not come at once", http.StatusServiceUnavailable)
				return
			}
		}
		w.Write(data)
	}))
	defer srv.Close()
	sum := sha256.Sum256(data)
	target := &needleTarget{volume: strings.TrimPrefix(srv.URL, "http://"), fid: "3,01637037d6", size: len(data), sha256: hex.EncodeToString(sum[:])}

	in := strings.NewReader("block needle-http 1000000 200000000\nblock needle-http 0 100000000\nquit\n")
	var out strings.Builder
	if err := serve(nil, in, &out, serveConfig{core: -1, name: "needle.read.test.http.c8", needle: target, conc: conc}); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Scan() // ready
	var samples int64
	for i, measure := range []int64{200000000, 100000000} {
		if !sc.Scan() {
			t.Fatalf("block %d: no answer in %q", i, out.String())
		}
		var b blockResult
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil || b.Scenario != "needle.read.test.http.c8" {
			t.Fatalf("block %d: %s (%v)", i, sc.Text(), err)
		}
		var inHist int64
		for _, bucket := range b.Hist {
			inHist += bucket[1]
		}
		// The window is the measured time; every recorded read is in the histogram.
		if b.Samples == 0 || inHist != b.Samples || b.Ops < b.Samples || b.ElapsedNs != measure || b.CPUNs <= 0 || b.Ring != nil {
			t.Fatalf("block %d: %s", i, sc.Text())
		}
		samples += b.Samples
	}
	// Each recorded sample was a GET, besides the ready check's and the readers' checks.
	if gets.Load() < 1+conc+samples {
		t.Fatalf("%d GETs for %d samples", gets.Load(), samples)
	}

	// The manual blocks run one goroutine, -conc or not.
	out.Reset()
	err := serve(nil, strings.NewReader("block reader-http 0 1000000\n"), &out, serveConfig{core: -1, name: "x", needle: target, conc: 2})
	if err != nil || !strings.Contains(out.String(), `"scenario":"x+reader-http"`) {
		t.Fatalf("reader-http with -conc: %v, %s", err, out.String())
	}
}
