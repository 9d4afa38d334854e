// Package weedfront is the test data of the SeaweedFS front-end scenarios (the bench's
// cmd/ringlat fsread.go, the demo): files generated as a function of their name and offset
// (FillPages), so any read through a mount, S3 or a filer can be checked byte for byte
// without keeping a copy, and written through a filer's HTTP API (FilerPut). The front ends
// themselves are started with internal/weedcluster (StartFiler, StartMount, StartS3).
package weedfront

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Page is the unit of the generated data and of the random reads.
const Page = 4096

// FillPages fills dst with the bytes of the generated file `seed` from offset off (a
// multiple of Page): page i holds the output of PCG(seed, i).
func FillPages(dst []byte, seed uint64, off int64) {
	if off%Page != 0 {
		panic("FillPages: unaligned offset")
	}
	for page := off / Page; len(dst) > 0; page++ {
		r := rand.NewPCG(seed, uint64(page))
		n := min(len(dst), Page)
		for i := 0; i < n; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				dst[i+j] = byte(v >> (8 * j))
			}
		}
		dst = dst[n:]
	}
}

// SeedOf names a generated file's content.
func SeedOf(name string) uint64 {
	var h uint64 = 14695981039346656037 // FNV-1a
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return h
}

// PagesReader streams the generated file `seed` of size bytes (for uploads).
type PagesReader struct {
	Seed uint64
	Size int64
	off  int64
	page [Page]byte
}

func (r *PagesReader) Read(p []byte) (int, error) {
	if r.off >= r.Size {
		return 0, io.EOF
	}
	in := r.off % Page
	if in == 0 {
		FillPages(r.page[:], r.Seed, r.off)
	}
	n := copy(p, r.page[in:min(int64(Page), in+r.Size-r.off)])
	r.off += int64(n)
	return n, nil
}

// FilerPut writes the generated file `seed` of size bytes to the filer at path (the filer
// splits it into chunks of its -maxMB).
func FilerPut(ctx context.Context, filer, path string, seed uint64, size int64) error {
	return FilerPutData(ctx, filer, path, "application/octet-stream", &PagesReader{Seed: seed, Size: size}, size)
}

// FilerPutData writes size bytes of body to the filer at path with Content-Type mime (a
// text type lets the filer store the chunks gzipped).
func FilerPutData(ctx context.Context, filer, path, mime string, body io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+filer+path, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", mime)
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("writing %s through the filer: %w", path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("writing %s through the filer: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
