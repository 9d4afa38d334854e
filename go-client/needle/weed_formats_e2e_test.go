package needle

// End to end against a real SeaweedFS, for volume formats and events that only a real
// `weed` produces (tracker issue #14, "Real SeaweedFS, not only our own writer"):
//
//   - TestWeed5BytesOffsetE2E: a weed built with -tags 5BytesOffset (scripts/weed --5bytes)
//     writes 17-byte .idx entries; the engine finds them and serves every needle.
//   - TestWeedVacuumE2E: `weed shell` volume.vacuum compacts the volumes while reads go on
//     through the rings; every read before, during and after returns the right bytes and
//     the engine's status shows the volumes reopened at the next compaction revision.
//   - TestWeedTTLE2E: needles uploaded with ?ttl= into a TTL volume.
//   - TestWeedChunkManifestE2E: chunk manifests written by a real weed (a filer's, through
//     weed mount, and weed upload's flagged one); the ring answers what the volume
//     server's GET ?cm=false answers.
//
// Version 2 volumes are not covered: the pinned weed creates every volume at
// needle.GetCurrentVersion(), which returns Version3 (weed/storage/needle/volume_version.go):
// the master puts it in the grow option that topology/volume_growth.go sends to the volume
// server's AllocateVolume (server/master_grpc_server_assign.go, master_grpc_server_volume.go,
// master_server_handlers_admin.go), `weed compact` and a new disk location use it too, and
// vacuum keeps a volume's own version; only `weed backup` of a Version 2 volume would make
// one. So it cannot write a Version 2 volume of its own.
//
// Binaries as in weed_e2e_test.go (SWRING_WEED, SWRING_ENGINE, SWRING_REQUIRE_WEED=1), plus
// SWRING_WEED_5BYTES for the 5BytesOffset weed.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// formatsContext bounds one test: generous, below the test binary's deadline.
func formatsContext(t *testing.T) context.Context {
	limit := 8 * time.Minute
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)-20*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// startFormatsCluster starts a master and a volume server of the given weed.
func startFormatsCluster(ctx context.Context, t *testing.T, weed string) *weedcluster.Cluster {
	t.Helper()
	dir := shortTempDir(t)
	c, err := weedcluster.Start(ctx, weed, filepath.Join(dir, "weed"), weedcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, filepath.Join(c.Dir, "weed-volume.log"))
			dumpTail(t, filepath.Join(c.Dir, "weed-master.log"))
		}
	})
	return c
}

// ringRig is an engine serving a cluster's volume directory (UCX over tcp), an engine
// beside the client, and readers.
type ringRig struct {
	c         *weedcluster.Cluster
	engineBin string
	serverCfg string // the serving engine's config (for `engine status`)
	onRing    *Reader
	httpOnly  *Reader
}

func startRingRig(ctx context.Context, t *testing.T, c *weedcluster.Cluster, engineBin string) *ringRig {
	t.Helper()
	last := runtime.NumCPU() - 1
	sdir := shortTempDir(t)
	server, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: sdir, Listen: true,
		Transports: "tcp", VolumeDirs: []string{c.VolumeDir}, Cores: []int{last}})
	if err != nil {
		t.Fatalf("serving engine: %v", err)
	}
	t.Cleanup(server.Stop)
	cdir := shortTempDir(t)
	client, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: cdir, Transports: "tcp",
		Cores: []int{max(last-1, 0)}})
	if err != nil {
		t.Fatalf("client engine: %v", err)
	}
	t.Cleanup(client.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, filepath.Join(sdir, "engine.log"))
			dumpTail(t, filepath.Join(cdir, "engine.log"))
		}
	})
	r := &ringRig{c: c, engineBin: engineBin, serverCfg: filepath.Join(sdir, "engine.toml")}
	r.onRing = NewReader(Options{EngineSocket: client.Socket, EngineAddrs: map[string]string{c.Volume: server.UCXAddr},
		Only: PathRing})
	t.Cleanup(func() { r.onRing.Close() })
	r.httpOnly = NewReader(Options{Only: PathHTTP})
	t.Cleanup(func() { r.httpOnly.Close() })
	return r
}

// engineVolume is one volume of `engine status --json` (engine/src/seaweed VolumeInfo).
type engineVolume struct {
	ID                    uint32 `json:"id"`
	Collection            string `json:"collection"`
	Version               uint8  `json:"version"`
	CompactionRevision    uint16 `json:"compaction_revision"`
	NeedlesLive           uint64 `json:"needles_live"`
	NeedlesDeleted        uint64 `json:"needles_deleted"`
	IdxEntries            uint64 `json:"idx_entries"`
	DatBytes              uint64 `json:"dat_bytes"`
	IdxEntrySize          uint8  `json:"idx_entry_size"`
	IdxEntrySizeConfirmed bool   `json:"idx_entry_size_confirmed"`
	ReadsServed           uint64 `json:"reads_served"`
	ReadsRefused          uint64 `json:"reads_refused"`
}

// volumes runs `engine --config <serving engine's> status --json` and returns its volumes
// by id.
func (r *ringRig) volumes(ctx context.Context, t *testing.T) map[uint32]engineVolume {
	t.Helper()
	out, err := exec.CommandContext(ctx, r.engineBin, "--config", r.serverCfg, "status", "--json").Output()
	if err != nil {
		t.Fatalf("engine status --json: %v", err)
	}
	var s struct {
		Volumes []engineVolume `json:"volumes"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("engine status --json: %v: %.500s", err, out)
	}
	m := map[uint32]engineVolume{}
	for _, v := range s.Volumes {
		m[v.ID] = v
	}
	return m
}

// pollFor polls cond every 100 ms; the deadline is a hang guard, not a timing assertion.
func pollFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("no %s within 90 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readAllOnRing reads every file through the rings: live ones byte for byte (whole and one
// range), deleted ones ErrNeedleNotFound.
func (r *ringRig) readAllOnRing(ctx context.Context, t *testing.T, files []*e2eFile) {
	t.Helper()
	for _, f := range files {
		n, err := r.onRing.Read(ctx, r.c.Volume, f.fid)
		if f.deleted {
			if !errors.Is(err, ring.ErrNeedleNotFound) {
				t.Errorf("ring read of deleted %s: %v, want ErrNeedleNotFound", f, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ring read %s: %v", f, err)
			continue
		}
		checkNeedle(t, "ring read", f, n, PathRing, f.data, 0)
		if len(f.data) > 2 {
			off, length := int64(len(f.data)/3), int64(len(f.data)/3)
			n, err := r.onRing.ReadRange(ctx, r.c.Volume, f.fid, off, length)
			if err != nil {
				t.Errorf("ring range %s: %v", f, err)
				continue
			}
			checkNeedle(t, "ring range", f, n, PathRing, f.data[off:off+length], off)
		}
	}
}

func volumeOf(t *testing.T, fid string) uint32 { return mustParseFileID(t, fid).VolumeID }

// TestWeed5BytesOffsetE2E: a weed built with -tags 5BytesOffset writes 17-byte .idx
// entries; the engine ("auto" entry size) finds 17 in every volume and serves every needle
// (overwrites and deletions included) with the bytes the volume server returns.
func TestWeed5BytesOffsetE2E(t *testing.T) {
	_, engineBin := e2eBinaries(t)
	weed, err := weedcluster.FindWeed5Bytes()
	if err != nil {
		if os.Getenv("SWRING_REQUIRE_WEED") == "1" {
			t.Fatalf("SWRING_REQUIRE_WEED=1 but %v", err)
		}
		t.Skipf("end-to-end test skipped: %v (build it with scripts/weed --5bytes; SWRING_REQUIRE_WEED=1 makes this a failure)", err)
	}
	ctx := formatsContext(t)
	// `weed version` names the largest volume: 8000GB with 5-byte offsets, 30GB without.
	if v, err := exec.CommandContext(ctx, weed, "version").CombinedOutput(); err != nil || !strings.Contains(string(v), "8000GB") {
		t.Fatalf("%s is not a 5BytesOffset build: `weed version` says %q (%v); build it with scripts/weed --5bytes", weed, v, err)
	}
	start := time.Now()
	c := startFormatsCluster(ctx, t, weed)
	files := uploadE2ECorpus(ctx, t, c)
	t.Logf("%d files written with %s (%v)", len(files), weed, time.Since(start).Round(time.Millisecond))

	// What weed wrote: every .idx a whole number of 17-byte entries, and at least one that
	// is not also a whole number of 16-byte ones (so 16 cannot be what the engine reads).
	idxs, _ := filepath.Glob(filepath.Join(c.VolumeDir, "*.idx"))
	not16 := 0
	for _, p := range idxs {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size()%17 != 0 {
			t.Errorf("%s: %d bytes, not a whole number of 17-byte entries", p, st.Size())
		}
		if st.Size()%16 != 0 {
			not16++
		}
	}
	if not16 == 0 {
		t.Fatalf("no .idx in %s that only 17-byte entries explain (%d files)", c.VolumeDir, len(idxs))
	}

	r := startRingRig(ctx, t, c, engineBin)
	r.readAllOnRing(ctx, t, files)

	// used[vid] says whether the volume holds a live file: the master spreads files over
	// volumes at random, so a volume may hold only deleted ones, whose reads the engine
	// answers not-found (counted as refused, not served).
	used := map[uint32]bool{}
	for _, f := range files {
		used[volumeOf(t, f.fid)] = used[volumeOf(t, f.fid)] || !f.deleted
	}
	vols := r.volumes(ctx, t)
	for vid, live := range used {
		v, ok := vols[vid]
		switch {
		case !ok:
			t.Errorf("engine status: volume %d not served (volumes %v)", vid, vols)
		case v.IdxEntrySize != 17 || !v.IdxEntrySizeConfirmed:
			t.Errorf("engine status: volume %d idx entry size %d (confirmed %v), want 17 confirmed", vid, v.IdxEntrySize, v.IdxEntrySizeConfirmed)
		case live && v.ReadsServed == 0:
			t.Errorf("engine status: volume %d served no reads: %+v", vid, v)
		case !live && v.ReadsRefused == 0:
			t.Errorf("engine status: volume %d (deleted files only) refused no reads: %+v", vid, v)
		}
	}
	t.Logf("%d volumes with needles, all read with 17-byte entries (%v)", len(used), time.Since(start).Round(time.Millisecond))
}

// TestWeedVacuumE2E: volume.vacuum through `weed shell` compacts every volume with
// deleted needles while 4 goroutines read through the rings. Every read right before,
// during and after returns the right bytes; the engine's status shows each compacted
// volume reopened (compaction revision up, no deleted needles left, reads served since the
// reopen), and deleted needles stay not found.
func TestWeedVacuumE2E(t *testing.T) {
	weed, engineBin := e2eBinaries(t)
	ctx := formatsContext(t)
	start := time.Now()
	c := startFormatsCluster(ctx, t, weed)
	rng := rand.New(rand.NewPCG(3, 4))
	var files, live []*e2eFile
	for i := range 60 {
		f := &e2eFile{name: fmt.Sprintf("v%d.bin", i), mime: "application/octet-stream", data: randomBytes(rng, 1+rng.IntN(300<<10))}
		if i%5 == 0 {
			f.name, f.mime, f.data, f.gzipLikely = fmt.Sprintf("v%d.txt", i), "text/plain", randomWords(rng, 20<<10), true
		}
		fid, err := c.Upload(ctx, f.name, f.mime, f.data)
		if err != nil {
			t.Fatal(err)
		}
		f.fid = fid
		files = append(files, f)
	}
	// Delete every third file: garbage in each volume that got one.
	garbage := map[uint32]bool{}
	for i, f := range files {
		if i%3 == 1 {
			if err := c.Delete(ctx, f.fid); err != nil {
				t.Fatal(err)
			}
			f.deleted = true
			garbage[volumeOf(t, f.fid)] = true
		} else {
			live = append(live, f)
		}
	}
	for _, f := range files {
		checkHTTP(ctx, t, c, f)
	}

	r := startRingRig(ctx, t, c, engineBin)
	r.readAllOnRing(ctx, t, files)
	before := r.volumes(ctx, t)
	for vid := range garbage {
		if v, ok := before[vid]; !ok || v.NeedlesDeleted == 0 {
			t.Fatalf("engine status before the vacuum: volume %d %+v, want deleted needles", vid, v)
		}
	}

	var stop, reopened atomic.Bool
	var reads, readsAfter atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; !stop.Load(); i++ {
				f := live[i%len(live)]
				after := reopened.Load()
				n, err := r.onRing.Read(ctx, c.Volume, f.fid)
				if err != nil {
					t.Errorf("ring read %s (after the reopen %v): %v", f, after, err)
					return
				}
				if !bytes.Equal(n.Data, f.data) {
					t.Errorf("ring read %s (after the reopen %v): %d bytes, not what was written", f, after, len(n.Data))
					return
				}
				reads.Add(1)
				if after {
					readsAfter.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	pollFor(ctx, t, "100 reads before the vacuum", func() bool { return reads.Load() >= 100 || t.Failed() })
	readsBefore := reads.Load()

	t0 := time.Now()
	out, err := c.Shell(ctx, "lock", "volume.vacuum -garbageThreshold 0.0001", "unlock")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("weed shell volume.vacuum in %v (%d reads so far, %d before it):\n%s", time.Since(t0).Round(time.Millisecond), reads.Load(), readsBefore, out)
	readsDuring := reads.Load() - readsBefore

	var after map[uint32]engineVolume
	pollFor(ctx, t, "engine status with every vacuumed volume reopened", func() bool {
		after = r.volumes(ctx, t)
		for vid := range garbage {
			v := after[vid]
			if v.CompactionRevision <= before[vid].CompactionRevision || v.NeedlesDeleted != 0 {
				return false
			}
		}
		return true
	})
	reopened.Store(true)
	pollFor(ctx, t, "100 reads after the reopen", func() bool { return readsAfter.Load() >= 100 || t.Failed() })
	stop.Store(true)
	wg.Wait()

	// A volume the master gave only deleted files has no reads to serve after the reopen.
	hasLive := map[uint32]bool{}
	for _, f := range live {
		hasLive[volumeOf(t, f.fid)] = true
	}
	after = r.volumes(ctx, t)
	for vid := range garbage {
		b, a := before[vid], after[vid]
		if a.CompactionRevision != b.CompactionRevision+1 || a.NeedlesDeleted != 0 || a.DatBytes >= b.DatBytes || (hasLive[vid] && a.ReadsServed == 0) {
			t.Errorf("volume %d: before the vacuum %+v, after %+v: want revision +1, no deleted needles, a smaller .dat, reads since the reopen", vid, b, a)
		}
	}
	// Everything again on the compacted volumes, deleted needles included.
	r.readAllOnRing(ctx, t, files)
	t.Logf("%d volumes vacuumed; reads: %d before, %d during, %d after the reopen (%v)", len(garbage), readsBefore, readsDuring,
		readsAfter.Load(), time.Since(start).Round(time.Millisecond))
}

// TestWeedTTLE2E: needles uploaded with ?ttl=1h (into a volume the master grew for that
// TTL) read through the rings with the right bytes and the TTL flag.
func TestWeedTTLE2E(t *testing.T) {
	weed, engineBin := e2eBinaries(t)
	ctx := formatsContext(t)
	c := startFormatsCluster(ctx, t, weed)
	rng := rand.New(rand.NewPCG(5, 6))
	var files []*e2eFile
	for i, n := range []int{1, 1000, 64 << 10, 1<<20 + 5, 3 << 20} {
		f := &e2eFile{name: fmt.Sprintf("ttl%d.bin", i), mime: "application/octet-stream", data: randomBytes(rng, n)}
		files = append(files, f)
	}
	files = append(files, &e2eFile{name: "ttl.txt", mime: "text/plain", data: randomWords(rng, 100<<10), gzipLikely: true})
	ttlVolumes := map[uint32]bool{}
	for _, f := range files {
		fid, addr, err := c.AssignTTL(ctx, "1h")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.PutQuery(ctx, addr, fid, "ttl=1h", f.name, f.mime, f.data); err != nil {
			t.Fatal(err)
		}
		f.fid = fid
		ttlVolumes[volumeOf(t, fid)] = true
		checkHTTP(ctx, t, c, f)
	}
	r := startRingRig(ctx, t, c, engineBin)
	r.readAllOnRing(ctx, t, files)
	for _, f := range files {
		n, err := r.onRing.Read(ctx, c.Volume, f.fid)
		if err != nil {
			t.Errorf("ring read %s: %v", f, err)
			continue
		}
		if n.Flags&flagHasTTL == 0 {
			t.Errorf("ring read %s: flags %#x, no TTL flag", f, n.Flags)
		}
	}
	t.Logf("%d TTL needles in volumes %v", len(files), ttlVolumes)
}

// TestWeedChunkManifestE2E: chunk manifests written by a real weed, read through the
// rings as the volume server's GET ?cm=false answers them (the reader's HTTP path):
//
//   - The filer's manifest: 256 small chunks folded into one FileChunkManifest (protobuf)
//     needle. It is an ordinary needle (only the filer's metadata says is_chunk_manifest),
//     so the ring reports ChunkManifest false and answers its bytes.
//   - `weed upload -maxMB=1` of a 3 MiB file: the chunks, then a JSON manifest uploaded
//     with ?cm=true (weed/operation/submit.go), the needle flagged FlagChunkManifest: the
//     volume server's plain GET assembles the file, ?cm=false answers the JSON, and so
//     must the ring, with ChunkManifest true.
//
// When the pinned filer folds chunks into a manifest (weed/filer/filechunk_manifest.go
// MaybeManifestize): at ManifestBatch (10000, filer/manifest_batch.go) data chunks, i.e.
// a 10 GB file at -maxMB=1 (a plain upload cuts -maxMB chunks, at least 1 MiB), or when
// SmallChunkManifestBatch (256) chunks are smaller than smallChunkSize (1 MiB). Through the
// filer's HTTP API, appends (?op=append) make a chunk each, but the fold cannot happen
// there: the filer first merges chunks under half of -maxMB once 256 of them are half the
// file (server/filer_server_handlers_write_merge.go), and an append of 512 KiB+1-byte
// pieces with -maxMB=1 that does reach the fold is refused with "entry ... changed during
// append; retry the request", every time (autochunk.go compares the entry with a snapshot
// whose chunk protos mergeIntoManifest's BeforeEntrySerialization has just rewritten).
// The smallest practical trigger is `weed mount` (FUSE): 256 writes of 8 KiB, each
// fsync'ed, upload 256 chunks, and the mount's flush (and the filer's UpdateEntry) fold
// them; 2 MiB, larger than the 1 MiB chunk size.
func TestWeedChunkManifestE2E(t *testing.T) {
	weed, engineBin := e2eBinaries(t)
	ctx := formatsContext(t)
	start := time.Now()
	c := startFormatsCluster(ctx, t, weed)
	filer, err := c.StartFiler(ctx, weedcluster.FilerOptions{MaxMB: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, filer.LogPath)
		}
	})
	mount, err := c.StartMount(ctx, weedcluster.MountOptions{Filer: filer.Addr, ChunkSizeLimitMB: 1})
	if err != nil {
		if os.Getenv("SWRING_REQUIRE_WEED") == "1" {
			t.Fatalf("weed mount: %v", err)
		}
		t.Skipf("weed mount (FUSE) unavailable: %v", err)
	}
	t.Cleanup(mount.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, mount.LogPath)
		}
	})
	// 256 pieces of 8 KiB, each synced: the mount uploads each as a chunk of its own, and
	// its flush (and the filer's UpdateEntry) fold the 256 small chunks into a manifest.
	const pieces, pieceSize = 256, 8 << 10
	rng := rand.New(rand.NewPCG(7, 8))
	whole := randomBytes(rng, pieces*pieceSize)
	if err := os.MkdirAll(filepath.Join(mount.Dir, "manifest"), 0o755); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Create(filepath.Join(mount.Dir, "manifest", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range pieces {
		if _, err := fh.Write(whole[i*pieceSize : (i+1)*pieceSize]); err != nil {
			t.Fatal(err)
		}
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + filer.Addr + "/manifest/big.bin"
	t.Logf("%d synced writes of %d bytes through weed mount (%v)", pieces, pieceSize, time.Since(start).Round(time.Millisecond))

	// The filer's entry: one manifest chunk now, for the 256 data chunks.
	meta := filerGet(ctx, t, url+"?metadata=true")
	var entry struct {
		Chunks []struct {
			FileID          string `json:"file_id"`
			Size            uint64 `json:"size"`
			IsChunkManifest bool   `json:"is_chunk_manifest"`
		} `json:"chunks"`
	}
	if err := json.Unmarshal(meta, &entry); err != nil {
		t.Fatalf("filer metadata: %v: %.500s", err, meta)
	}
	var manifests []string
	for _, ch := range entry.Chunks {
		if ch.IsChunkManifest {
			manifests = append(manifests, ch.FileID)
		}
	}
	if len(manifests) != 1 || len(entry.Chunks) != 1 {
		t.Fatalf("filer metadata: %d chunks, manifests %v, want one manifest chunk: %.800s", len(entry.Chunks), manifests, meta)
	}
	if got := filerGet(ctx, t, url); !bytes.Equal(got, whole) {
		t.Fatalf("filer GET: %d bytes, not the %d appended", len(got), len(whole))
	}
	mfid := manifests[0]

	// The filer's manifest is an ordinary needle (a filer_pb.FileChunkManifest; only the
	// filer's metadata marks it): the volume server's GET answers its bytes, ?cm=false or not.
	raw, status, err := c.GetQuery(ctx, mfid, "cm=false")
	if err != nil || status != http.StatusOK || len(raw) == 0 {
		t.Fatalf("GET %s?cm=false: %d, %d bytes, %v", mfid, status, len(raw), err)
	}
	r := startRingRig(ctx, t, c, engineBin)
	checkManifestOnRing(ctx, t, r, mfid, raw, false)
	t.Logf("filer manifest %s: %d bytes for a %d-byte file (%v)", mfid, len(raw), len(whole), time.Since(start).Round(time.Millisecond))

	// The needle-flagged kind (FlagChunkManifest): `weed upload -maxMB=1` of a larger file
	// writes its chunks, then a JSON manifest with ?cm=true (weed/operation/submit.go);
	// the volume server's plain GET assembles the file, GET ?cm=false answers the JSON.
	big := randomBytes(rng, 3<<20+5)
	path := filepath.Join(t.TempDir(), "upload.bin")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, weed, "upload", "-master="+c.Master, "-maxMB=1", path).Output()
	if err != nil {
		t.Fatalf("weed upload: %v: %s", err, out)
	}
	var up []struct {
		Fid   string `json:"fid"`
		Size  int64  `json:"size"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &up); err != nil || len(up) != 1 || up[0].Fid == "" || up[0].Error != "" {
		t.Fatalf("weed upload answered %s (%v)", out, err)
	}
	ufid := up[0].Fid
	assembled, status, err := c.Get(ctx, ufid)
	if err != nil || status != http.StatusOK || !bytes.Equal(assembled, big) {
		t.Fatalf("GET %s: %d, %d bytes (want the %d-byte file), %v", ufid, status, len(assembled), len(big), err)
	}
	uraw, status, err := c.GetQuery(ctx, ufid, "cm=false")
	if err != nil || status != http.StatusOK || !json.Valid(uraw) || !bytes.Contains(uraw, []byte(`"chunks"`)) {
		t.Fatalf("GET %s?cm=false: %d, %v: %.300s, want the JSON manifest", ufid, status, err, uraw)
	}
	checkManifestOnRing(ctx, t, r, ufid, uraw, true)
	t.Logf("weed upload manifest %s: %d bytes for a %d-byte file (%v)", ufid, len(uraw), len(big), time.Since(start).Round(time.Millisecond))
}

// checkManifestOnRing reads a manifest needle through the rings (whole and a range) and
// through the reader's HTTP path (GET ?cm=false): both must answer raw, and the ring must
// report the needle's ChunkManifest flag as flagged.
func checkManifestOnRing(ctx context.Context, t *testing.T, r *ringRig, fid string, raw []byte, flagged bool) {
	t.Helper()
	f := &e2eFile{name: "(chunk manifest)", fid: fid, data: raw}
	n, err := r.onRing.Read(ctx, r.c.Volume, fid)
	if err != nil {
		t.Fatalf("ring read of manifest %s: %v", fid, err)
	}
	checkNeedle(t, "ring read of the manifest", f, n, PathRing, raw, 0)
	if n.ChunkManifest != flagged || (n.Flags&FlagChunkManifest != 0) != flagged {
		t.Errorf("ring read of manifest %s: ChunkManifest %v, flags %#x, want flagged %v", fid, n.ChunkManifest, n.Flags, flagged)
	}
	off, length := int64(len(raw)/2), int64(len(raw)/4+1)
	if n, err := r.onRing.ReadRange(ctx, r.c.Volume, fid, off, length); err != nil {
		t.Errorf("ring range of manifest %s: %v", fid, err)
	} else {
		checkNeedle(t, "ring range of the manifest", f, n, PathRing, raw[off:off+length], off)
	}
	h, err := r.httpOnly.Read(ctx, r.c.Volume, fid)
	if err != nil {
		t.Fatalf("HTTP read of manifest %s: %v", fid, err)
	}
	checkNeedle(t, "HTTP read of the manifest", f, h, PathHTTP, raw, 0)
}

func filerGet(ctx context.Context, t *testing.T, url string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v: %.300s", url, resp.Status, err, b)
	}
	return b
}
