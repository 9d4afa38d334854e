package needle

// Read JWTs end to end: a real `weed` master and volume server started with a
// [jwt.signing.read] key in their security.toml, an engine serving the volume directory
// with the same file (seaweedfs.security-toml), and a client engine. For every file and
// every kind of token — none, one for another file, an expired one, one signed with
// another key, a valid one from the master — the HTTP path (the volume server's own
// check) and the ring path (the serving engine's) must give the same answer: the same
// bytes, or a refusal matching ErrUnauthorized (on the ring with the precise code).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
	"github.com/seaweed-ring/seaweed-ring/go-client/internal/weedcluster"
	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// signHS256 mints a JWT the way SeaweedFS's GenJwtForVolumeServer does (HS256, claims fid
// and, when exp != 0, exp), written out here from RFC 7519 so that the test does not share
// code with what it tests.
func signHS256(t *testing.T, key []byte, fid string, exp int64) string {
	return signHS256Padded(t, key, fid, exp, "")
}

// signHS256Padded is signHS256 with an extra claim "pad" (when not empty), to make long
// tokens.
func signHS256Padded(t *testing.T, key []byte, fid string, exp int64, pad string) string {
	t.Helper()
	claims := map[string]any{"fid": fid}
	if exp != 0 {
		claims["exp"] = exp
	}
	if pad != "" {
		claims["pad"] = pad
	}
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestWeedReadJWT(t *testing.T) {
	weed, engineBin := e2eBinaries(t)
	limit := 5 * time.Minute
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)-20*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	dir := shortTempDir(t)

	key := []byte("swring-e2e-read-key")
	confDir := filepath.Join(dir, "conf")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	security := filepath.Join(confDir, "security.toml")
	// Read key only (uploads need no token); tokens the master signs live an hour, so no
	// valid token below can expire while the test runs.
	if err := os.WriteFile(security, []byte("[jwt.signing.read]\nkey = \""+string(key)+"\"\nexpires_after_seconds = 3600\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster, err := weedcluster.Start(ctx, weed, filepath.Join(dir, "weed"), weedcluster.Options{ConfigDir: confDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)

	last := runtime.NumCPU() - 1
	server, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: shortTempDir(t), Listen: true,
		VolumeDirs: []string{cluster.VolumeDir}, SecurityTOML: security, Cores: []int{last}})
	if err != nil {
		t.Fatalf("serving engine: %v", err)
	}
	t.Cleanup(server.Stop)
	client, err := enginectl.Start(ctx, enginectl.Options{Bin: engineBin, Dir: shortTempDir(t), Cores: []int{max(last-1, 0)}})
	if err != nil {
		t.Fatalf("client engine: %v", err)
	}
	t.Cleanup(client.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			dumpTail(t, filepath.Join(filepath.Dir(server.Socket), "engine.log"))
			dumpTail(t, filepath.Join(cluster.Dir, "weed-volume.log"))
		}
	})

	// A small file, and one read in several READ_NEEDLEs (ChunkSize below): the token must
	// be on every one of them.
	rng := rand.New(rand.NewPCG(13, 8))
	type file struct {
		fid  string
		data []byte
	}
	var files []file
	for _, n := range []int{100, 200 << 10} {
		data := randomBytes(rng, n)
		fid, err := cluster.Upload(ctx, "f.bin", "application/octet-stream", data)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{fid, data})
	}

	// The volume server enforces the key: a plain GET without a token is refused.
	if _, status, err := cluster.Get(ctx, files[0].fid); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("GET %s without a token: status %d, %v; want 401 (is security.toml read?)", files[0].fid, status, err)
	}

	opts := Options{EngineSocket: client.Socket, EngineAddrs: map[string]string{cluster.Volume: server.UCXAddr},
		ChunkSize: 64 << 10}
	opts.Only = PathRing
	onRing := NewReader(opts)
	t.Cleanup(func() { onRing.Close() })
	opts.Only = PathHTTP
	httpOnly := NewReader(opts)
	t.Cleanup(func() { httpOnly.Close() })
	opts.Only = PathAuto
	auto := NewReader(opts)
	t.Cleanup(func() { auto.Close() })

	for i, f := range files {
		valid, err := cluster.ReadJWT(ctx, f.fid)
		if err != nil || valid == "" {
			t.Fatalf("master read token for %s: %q, %v", f.fid, valid, err)
		}
		other, err := cluster.ReadJWT(ctx, files[(i+1)%len(files)].fid)
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name    string
			jwt     string
			ringErr error // nil: the read succeeds
		}{
			{"none", "", ring.ErrJWTMissing},
			{"another file's", other, ring.ErrJWTWrongFile},
			{"expired", signHS256(t, key, f.fid, time.Now().Add(-time.Minute).Unix()), ring.ErrJWTExpired},
			{"other key", signHS256(t, []byte("not-the-key"), f.fid, 0), ring.ErrJWTInvalid},
			{"valid (master)", valid, nil},
			{"valid (no exp)", signHS256(t, key, f.fid, 0), nil},
		}
		for _, c := range cases {
			q := Request{VolumeServer: cluster.Volume, FileID: f.fid, JWT: c.jwt}
			hn, herr := httpOnly.ReadWith(ctx, q)
			rn, rerr := onRing.ReadWith(ctx, q)
			what := f.fid + " with " + c.name + " token"
			if c.ringErr != nil {
				if !errors.Is(herr, ring.ErrUnauthorized) {
					t.Errorf("%s over HTTP: %v, want 401 (ErrUnauthorized)", what, herr)
				}
				if !errors.Is(rerr, c.ringErr) || !errors.Is(rerr, ring.ErrUnauthorized) {
					t.Errorf("%s over the ring: %v, want %v (ErrUnauthorized)", what, rerr, c.ringErr)
				}
				// The auto reader takes the ring's refusal as final: no HTTP fallback.
				before := auto.Stats().Fallbacks
				if _, aerr := auto.ReadWith(ctx, q); !errors.Is(aerr, c.ringErr) || auto.Stats().Fallbacks != before {
					t.Errorf("%s, auto: %v (fallbacks %d -> %d), want %v from the ring", what, aerr, before, auto.Stats().Fallbacks, c.ringErr)
				}
				continue
			}
			if herr != nil || rerr != nil {
				t.Errorf("%s: HTTP %v, ring %v; want both to read it", what, herr, rerr)
				continue
			}
			if hn.Path != PathHTTP || rn.Path != PathRing || !bytes.Equal(hn.Data, f.data) || !bytes.Equal(rn.Data, f.data) {
				t.Errorf("%s: HTTP %v %d bytes, ring %v %d bytes; want both the %d uploaded bytes", what, hn.Path, len(hn.Data), rn.Path, len(rn.Data), len(f.data))
			}
			// A range, too (on the ring its first READ_NEEDLE is ranged already; this one
			// starts in the middle).
			q.Ranged, q.Offset, q.Length = true, int64(len(f.data)/2), 70
			hr, herr := httpOnly.ReadWith(ctx, q)
			rr, rerr := onRing.ReadWith(ctx, q)
			want := f.data[len(f.data)/2:][:min(70, len(f.data)-len(f.data)/2)]
			if herr != nil || rerr != nil || !bytes.Equal(hr.Data, want) || !bytes.Equal(rr.Data, want) {
				t.Errorf("%s, range: HTTP %v, ring %v; want %d bytes from %d", what, herr, rerr, len(want), q.Offset)
			}
		}
	}
	// The longest token a READ_NEEDLE carries works on the ring; a longer one goes over
	// HTTP (the ring-only reader refuses it).
	f := files[0]
	longest := ""
	for pad := 1; ; pad++ {
		tok := signHS256Padded(t, key, f.fid, 0, strings.Repeat("p", pad))
		if len(tok) > MaxJWTLen {
			break
		}
		longest = tok
	}
	q := Request{VolumeServer: cluster.Volume, FileID: f.fid, JWT: longest}
	if n, err := onRing.ReadWith(ctx, q); err != nil || !bytes.Equal(n.Data, f.data) {
		t.Errorf("ring read with a %d-byte token: %v", len(longest), err)
	}
	q.JWT = signHS256Padded(t, key, f.fid, 0, strings.Repeat("p", MaxJWTLen))
	if _, err := onRing.ReadWith(ctx, q); !errors.Is(err, ring.ErrInvalidEntry) {
		t.Errorf("ring-only read with a %d-byte token: %v, want ErrInvalidEntry", len(q.JWT), err)
	}
	if n, err := auto.ReadWith(ctx, q); err != nil || n.Path != PathHTTP || !bytes.Equal(n.Data, f.data) {
		t.Errorf("auto read with a %d-byte token: %v, want it read over HTTP", len(q.JWT), err)
	}
	if s := onRing.Stats(); s.HTTPReads != 0 {
		t.Errorf("the ring-only reader read over HTTP: %+v", s)
	}
	if s := auto.Stats(); s.Fallbacks != 0 || s.HTTPReads != 1 {
		t.Errorf("the auto reader: %+v, want no fallback and the one HTTP read of the long token", s)
	}
}
