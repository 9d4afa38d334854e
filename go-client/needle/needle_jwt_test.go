package needle

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Request.JWT reaches the volume server's GET as SeaweedFS sends it.
func TestNeedleRequestJWTOnHTTP(t *testing.T) {
	var mu sync.Mutex
	var got []string // ReadMany reads concurrently: in any order
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte("data"))
	}))
	defer srv.Close()
	r := NewReader(Options{Only: PathHTTP})
	defer r.Close()
	vs := strings.TrimPrefix(srv.URL, "http://")
	res := r.ReadMany(context.Background(), []Request{
		{VolumeServer: vs, FileID: "3,01637037d6", JWT: "tok.en.sig"},
		{VolumeServer: vs, FileID: "3,01637037d6"},
	})
	for i, x := range res {
		if x.Err != nil || string(x.Needle.Data) != "data" {
			t.Fatalf("read %d: %v", i, x.Err)
		}
	}
	slices.Sort(got)
	if len(got) != 2 || got[0] != "" || got[1] != "Bearer tok.en.sig" {
		t.Fatalf("Authorization headers %q; want one \"Bearer tok.en.sig\" and one none", got)
	}
}
