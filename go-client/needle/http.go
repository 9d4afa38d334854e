package needle

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// HTTPError is a volume server's answer other than 200 or 206 on the HTTP path. 404
// matches ring.ErrNeedleNotFound, 416 ring.ErrRangeNotSatisfiable and 401 ring.ErrUnauthorized under
// errors.Is.
type HTTPError struct {
	StatusCode int    // e.g. 404
	Status     string // e.g. "404 Not Found"
	URL        string // the GET's URL
	// Body is the start of the response body (the volume server's reason, if any).
	Body string
}

func (e *HTTPError) Error() string {
	s := "swring: GET " + e.URL + ": " + e.Status
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Is maps status codes onto the package sentinels.
func (e *HTTPError) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusNotFound:
		return target == ring.ErrNeedleNotFound
	case http.StatusRequestedRangeNotSatisfiable:
		return target == ring.ErrRangeNotSatisfiable
	case http.StatusUnauthorized:
		return target == ring.ErrUnauthorized
	}
	return false
}

// httpRead is the HTTP path: GET <volume server>/<fid>?cm=false, with a Range header for
// ranges and Accept-Encoding: gzip with KeepCompressed.
func (r *Reader) httpRead(ctx context.Context, q Request, fid FileID) (*Needle, error) {
	base, err := volumeServerURL(q.VolumeServer)
	if err != nil {
		return nil, err
	}
	u := base + "/" + fid.String() + "?cm=false"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range r.opts.HTTPHeader {
		req.Header[k] = v
	}
	if q.JWT != "" {
		// As SeaweedFS's own readers send it (util/http: "BEARER " + jwt; the volume
		// server's GetJwt takes the scheme in any case).
		req.Header.Set("Authorization", "Bearer "+q.JWT)
	}
	if q.Ranged {
		rg := "bytes=" + strconv.FormatInt(q.Offset, 10) + "-"
		if q.Length > 0 && q.Length <= math.MaxInt64-q.Offset {
			rg += strconv.FormatInt(q.Offset+q.Length-1, 10)
		}
		req.Header.Set("Range", rg)
	}
	if r.opts.KeepCompressed {
		// The stored bytes of a gzip needle (Content-Encoding: gzip); set by hand, so the
		// transport does not decompress them.
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := r.httpc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, URL: u, Body: strings.TrimSpace(string(body))}
	}
	var body []byte
	if cl := resp.ContentLength; cl >= 0 && cl <= int64(cap(q.Dst)) {
		// Known length that fits the caller's buffer: read straight into it.
		body = q.Dst[:cl]
		if _, err := io.ReadFull(resp.Body, body); err != nil {
			return nil, fmt.Errorf("swring: GET %s: read body: %w", u, err)
		}
	} else {
		if cl >= 0 && cl <= maxNeedleData {
			body = make([]byte, 0, cl+1) // +1: ReadFrom sees EOF without growing
		}
		buf := bytes.NewBuffer(body)
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			return nil, fmt.Errorf("swring: GET %s: read body: %w", u, err)
		}
		body = buf.Bytes()
	}
	n := &Needle{
		FileID:      fid,
		Mime:        resp.Header.Get("Content-Type"),
		ContentType: resp.Header.Get("Content-Type"),
		ETag:        strings.Trim(resp.Header.Get("Etag"), `"`),
		Compressed:  resp.Uncompressed || strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip"),
		Path:        PathHTTP,
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		n.Name = params["filename"]
	}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			n.LastModified = t
		}
	}
	if resp.StatusCode == http.StatusPartialContent {
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != q.Offset || !q.Ranged {
			return nil, fmt.Errorf("swring: GET %s: unexpected Content-Range %q for range at %d", u, resp.Header.Get("Content-Range"), q.Offset)
		}
		if total < 0 {
			total = start + int64(len(body))
		}
		n.Data, n.Offset, n.Size = body, start, total
		return n, nil
	}
	// 200: the whole data (also when the server ignored a Range): cut the range here.
	n.Size = int64(len(body))
	if !q.Ranged {
		n.Data = body
		return n, nil
	}
	if q.Offset >= n.Size {
		return nil, ring.ErrRangeNotSatisfiable
	}
	end := n.Size
	if q.Length > 0 && q.Length < end-q.Offset {
		end = q.Offset + q.Length
	}
	n.Data, n.Offset = body[q.Offset:end:end], q.Offset
	return n, nil
}

// parseContentRange parses "bytes start-end/total" (total "*": -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	s, ok = strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, tot, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, false
	}
	a, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	return start, total, err == nil
}

// isGzip reports gzip's magic number at the start of b (SeaweedFS util.IsGzippedContent).
func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out := bytes.NewBuffer(make([]byte, 0, 2*len(b)))
	if _, err := out.ReadFrom(zr); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
