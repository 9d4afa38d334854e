package seaweedhook

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestNeedleURL(t *testing.T) {
	for _, c := range []struct {
		url, vs, fid string
	}{
		{"http://127.0.0.1:8080/3,01637037d6", "127.0.0.1:8080", "3,01637037d6"},
		{"http://vol:8080/3,01637037d6?readDeleted=true", "vol:8080", "3,01637037d6"},
		{"https://vol:8443/7,0a0b0c0d0e0f10", "vol:8443", "7,0a0b0c0d0e0f10"},
	} {
		vs, fid, err := needleURL(c.url)
		if err != nil || vs != c.vs || fid != c.fid {
			t.Errorf("needleURL(%q) = %q, %q, %v; want %q, %q", c.url, vs, fid, err, c.vs, c.fid)
		}
	}
	for _, bad := range []string{
		"",
		"ftp://vol:8080/3,01637037d6",
		"http:///3,01637037d6",
		"http://u:p@vol:8080/3,01637037d6",
		"http://vol:8080/3/01637037d6/name.txt",
		"http://vol:8080/3,01637037d6?cm=true",
		"http://filer:8888/?proxyChunkId=3,01637037d6",
		"http://vol:8080/not-a-fid",
		"http://vol:8080/3,01637037d6#frag",
	} {
		if vs, fid, err := needleURL(bad); err == nil {
			t.Errorf("needleURL(%q) = %q, %q, nil; want an error (not a plain needle GET)", bad, vs, fid)
		}
	}
}

func TestFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if h, err := FromEnv(env(nil), nil); h != nil || err != nil {
		t.Fatalf("unset: %v, %v; want nil, nil (stock behaviour)", h, err)
	}
	h, err := FromEnv(env(map[string]string{EnvEngineSocket: "/run/e.sock", EnvEnginePort: "14000",
		EnvEngineAddrs: "vol:8080=10.0.0.5:13337, vol2:8080=10.0.0.6:13337"}), nil)
	if err != nil || h.Socket() != "/run/e.sock" {
		t.Fatalf("FromEnv: %v, %v", h, err)
	}
	h.Close()
	for _, bad := range []map[string]string{
		{EnvEngineSocket: "/run/e.sock", EnvEnginePort: "0"},
		{EnvEngineSocket: "/run/e.sock", EnvEnginePort: "port"},
		{EnvEngineSocket: "/run/e.sock", EnvEngineAddrs: "vol:8080"},
		{EnvEngineSocket: "/run/e.sock", EnvEngineAddrs: "=10.0.0.5:13337"},
	} {
		if _, err := FromEnv(env(bad), nil); !errors.Is(err, ErrBadEnv) {
			t.Errorf("FromEnv(%v): %v, want ErrBadEnv", bad, err)
		}
	}
}

// With no engine behind the socket every read is declined at once (SeaweedFS's own GET
// then runs: the hook itself makes no HTTP request), and counted.
func TestReadChunkDeclinesWithoutEngine(t *testing.T) {
	h, err := New(Options{EngineSocket: filepath.Join(t.TempDir(), "none.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, u := range []string{"http://127.0.0.1:1/3,01637037d6", "http://127.0.0.1:1/bad"} {
		if data, ok := h.ReadChunk(context.Background(), u, "", true, 0, 0, nil); ok || data != nil {
			t.Errorf("ReadChunk(%s) = %d bytes, %v; want declined", u, len(data), ok)
		}
	}
	if _, ok := h.ReadChunk(context.Background(), "http://127.0.0.1:1/3,01637037d6", "", false, 0, 0, nil); ok {
		t.Error("a range of size 0 was served")
	}
	st := h.Stats()
	if st.Declined != 3 || st.Served != 0 || st.Reader.HTTPReads != 0 {
		t.Errorf("stats %+v: want 3 declined, none served, no HTTP read", st)
	}
}
