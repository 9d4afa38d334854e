package swring

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// NeedleRequest.JWT reaches the volume server's GET as SeaweedFS sends it.
func TestNeedleRequestJWTOnHTTP(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		w.Write([]byte("data"))
	}))
	defer srv.Close()
	r := NewNeedleReader(NeedleReaderOptions{Only: PathHTTP})
	defer r.Close()
	vs := strings.TrimPrefix(srv.URL, "http://")
	res := r.ReadNeedles(context.Background(), []NeedleRequest{
		{VolumeServer: vs, FileID: "3,01637037d6", JWT: "tok.en.sig"},
		{VolumeServer: vs, FileID: "3,01637037d6"},
	})
	for i, x := range res {
		if x.Err != nil || string(x.Needle.Data) != "data" {
			t.Fatalf("read %d: %v", i, x.Err)
		}
	}
	if len(got) != 2 || got[0] != "Bearer tok.en.sig" || got[1] != "" {
		t.Fatalf("Authorization headers %q; want [\"Bearer tok.en.sig\" \"\"]", got)
	}
}
