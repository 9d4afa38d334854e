package weedcluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The cluster helper itself: a real weed stores and returns a file, and its volume files
// appear where the engine will look. Skipped without a weed binary unless SWRING_REQUIRE_WEED=1.
func TestClusterRoundTrip(t *testing.T) {
	weed, err := FindWeed()
	if err != nil {
		if os.Getenv("SWRING_REQUIRE_WEED") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, weed, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	data := bytes.Repeat([]byte("seaweed "), 1000)
	fid, err := c.Upload(ctx, "a.txt", "text/plain", data)
	if err != nil {
		t.Fatal(err)
	}
	got, status, err := c.Get(ctx, fid)
	if err != nil || status != 200 || !bytes.Equal(got, data) {
		t.Fatalf("get %s: status %d err %v, %d bytes", fid, status, err, len(got))
	}
	if err := c.Delete(ctx, fid); err != nil {
		t.Fatal(err)
	}
	if _, status, _ := c.Get(ctx, fid); status != 404 {
		t.Fatalf("deleted file: status %d, want 404", status)
	}
	dats, _ := filepath.Glob(filepath.Join(c.VolumeDir, "*.dat"))
	idxs, _ := filepath.Glob(filepath.Join(c.VolumeDir, "*.idx"))
	if len(dats) == 0 || len(dats) != len(idxs) {
		t.Fatalf("volume files: %v %v", dats, idxs)
	}
}
