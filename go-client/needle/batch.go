package needle

import (
	"context"
	"errors"
	"sync"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// Request is one read of ReadMany.
type Request struct {
	// VolumeServer and FileID are as for Read.
	VolumeServer string
	FileID       string
	// Ranged reads Length bytes from Offset (see ReadRange); otherwise the whole
	// needle is read and Offset and Length are ignored.
	Ranged bool
	Offset int64
	Length int64
	// Dst, when its capacity holds the data, receives it: Needle.Data is then Dst[:n], and
	// a caller that reads many needles into one buffer allocates nothing per read for the
	// data (at 1 MiB per read, allocation and garbage collection otherwise cost more than
	// the transfer). The caller must not use Dst for anything else until done with the
	// Needle. Not used for gzip needles that are decompressed.
	Dst []byte
	// JWT is the read token for FileID that SeaweedFS hands out when its volume servers
	// check reads ([jwt.signing.read] in security.toml): the master's lookup answers it in
	// its Authorization header, filer chunks carry it. The HTTP path sends it as
	// "Authorization: Bearer JWT" (overriding HTTPHeader's); the ring path carries it in
	// every READ_NEEDLE (SetJWT) to the volume server's engine, which verifies it as
	// the volume server does when given the same security.toml. "" sends none. A refusal
	// matches ring.ErrUnauthorized on either path and is final (not retried over HTTP). A JWT
	// longer than MaxJWTLen is sent over HTTP only.
	JWT string
}

// Result is the outcome of one Request: a Needle or an error (*Error).
type Result struct {
	Needle *Needle // nil on error
	Err    error
}

// groupSize is how many needles ReadMany starts together at most (one SubmitBatch).
const groupSize = 32

// ReadMany reads many needles at once and returns one result per request, in order.
// Up to Concurrency needles are in progress together: their first READ_NEEDLEs are
// submitted with SubmitBatch (one ring publication per group), their continuations, HTTP
// fallbacks and decompression run concurrently. Each result is what Read or
// ReadRange would have returned.
func (r *Reader) ReadMany(ctx context.Context, reqs []Request) []Result {
	out := make([]Result, len(reqs))
	slots := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	// run completes request i in a goroutine of its own: j is its submitted first
	// READ_NEEDLE, or nil with ringErr why the ring was not used (nil: not tried).
	run := func(i int, fid FileID, j *ringJob, ringErr error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			var n *Needle
			if j != nil {
				n, ringErr = r.finish(ctx, j)
			}
			out[i].Needle, out[i].Err = r.complete(ctx, reqs[i], fid, n, ringErr)
		}()
	}
	for i := 0; i < len(reqs); {
		// One group: a slot for each request, at least one (waiting for it), as many more
		// as are free.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			for ; i < len(reqs); i++ {
				out[i].Err = &Error{FileID: reqs[i].FileID, VolumeServer: reqs[i].VolumeServer, Err: ctx.Err()}
			}
			continue
		}
		k := 1
	more:
		for i+k < len(reqs) && k < groupSize {
			select {
			case slots <- struct{}{}:
				k++
			default:
				break more
			}
		}
		group := reqs[i : i+k]
		var jobs []*ringJob
		used := 0
		for g := range group {
			q := &group[g]
			fid, err := ParseFileID(q.FileID)
			if err != nil || r.opts.Only == PathHTTP || r.isClosed() || (q.Ranged && q.Offset < 0) {
				run(i+g, fid, nil, nil) // HTTP, or complete reports what is wrong
				used++
				continue
			}
			if err := ringCarriesJWT(q.JWT); err != nil {
				run(i+g, fid, nil, r.ringOnly(err))
				used++
				continue
			}
			j, err := r.prepare(ctx, *q, fid, len(jobs) == 0)
			if errors.Is(err, ring.ErrNoBufferSpace) {
				break // the rest waits for the next group
			}
			used++
			if err != nil {
				run(i+g, fid, nil, err)
				continue
			}
			j.idx = i + g
			jobs = append(jobs, j)
		}
		for ; k > used; k-- {
			<-slots
		}
		// One SubmitBatch per session (a redial during the group splits it).
		for len(jobs) > 0 {
			c := jobs[0].c
			same := 0
			for same < len(jobs) && jobs[same].c == c {
				same++
			}
			batch := jobs[:same]
			jobs = jobs[same:]
			reqsRing := make([]ring.Request, len(batch))
			for x, j := range batch {
				reqsRing[x] = j.request()
			}
			tickets := make([]ring.Ticket, len(batch))
			n, err := c.SubmitBatch(ctx, reqsRing, tickets)
			for x, j := range batch {
				if x < n {
					j.t = tickets[x]
					run(j.idx, j.id, j, nil)
					continue
				}
				j.buf.Release()
				r.noteRingErr(j, err)
				run(j.idx, j.id, nil, err)
			}
		}
		i += used
	}
	wg.Wait()
	return out
}
