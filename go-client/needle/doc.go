// Package needle reads SeaweedFS needles through the seaweed-ring engine.
//
// A Reader (NewReader) takes a volume server address and a file id ("3,01637037d6",
// ParseFileID), finds and connects the engines, reads the needle with READ_NEEDLE into the
// session's shared memory, reads large needles range by range, decompresses like the volume
// server's HTTP GET, reads many needles at once (ReadMany), and falls back to the HTTP GET
// when the ring cannot answer. Needle.Path says which path served a read.
//
//	r := needle.NewReader(needle.Options{EngineSocket: sock}) // dials lazily
//	defer r.Close()
//	n, err := r.Read(ctx, "10.0.0.5:8080", "3,01637037d6")
//	n, err = r.ReadRange(ctx, "10.0.0.5:8080", "3,01637037d6", off, length)
//	res := r.ReadMany(ctx, []needle.Request{{VolumeServer: vs, FileID: fid, JWT: jwt}})
//
// Answers about a needle are result codes of the ring package: ring.ErrNoSuchVolume,
// ring.ErrNoSuchNeedle, ring.ErrNeedleDeleted, ring.ErrCookieMismatch (all matching
// ring.ErrNeedleNotFound, as does an HTTP 404), ring.ErrCorrupt and
// ring.ErrRangeNotSatisfiable, and the read-JWT refusals (matching ring.ErrUnauthorized,
// as does an HTTP 401). Reads fail with an *Error that unwraps to them.
//
// On a ring.Client of your own, ReadRequest and ReadRangeRequest build READ_NEEDLE
// requests for Submit or SubmitBatch (SetJWT adds a read token), and Decode reads the
// metadata (Meta) and the data a completed one left in its buffer.
package needle
