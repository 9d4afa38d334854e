// Package enginectl starts real engine processes (the Rust `engine` binary) for the
// end-to-end tests, the demo and the benchmark: a config file in a private directory, the
// control socket there, optionally a UCX listener on a loopback port the engine picks, and
// optionally SeaweedFS volume directories to serve.
package enginectl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options say what engine to start. Bin and Dir are required.
type Options struct {
	Bin string // the engine binary
	Dir string // private directory: config, control socket
	// Listen starts a UCX listener on 127.0.0.1 (port chosen by the engine; see UCXAddr).
	Listen bool
	// ListenAddr is the UCX listener's address instead ("ip:port"; implies Listen).
	ListenAddr string
	// Netns runs the engine in that network namespace (`ip netns exec Netns`; needs root).
	Netns string
	// RequestTimeoutMS is ucx.request-timeout-ms (0: the engine's default).
	RequestTimeoutMS int
	// Transports is ucx.transports ("tcp", "sm,tcp", ...; default "tcp").
	Transports string
	// VolumeDirs are SeaweedFS volume directories to serve ([seaweedfs] directories).
	VolumeDirs []string
	// SecurityTOML is the volume server's security.toml ([seaweedfs] security-toml): with
	// a [jwt.signing.read] key the engine checks read JWTs as the volume server does.
	SecurityTOML string
	// Cores pins the workers ([workers] cores); empty: the engine's default.
	Cores []int
	// Log receives the engine's log (default: engine.log in Dir).
	Log io.Writer
	// LogFilter is RUST_LOG for the engine (default "info").
	LogFilter string
}

// Engine is a running engine process.
type Engine struct {
	Socket  string // control socket: ring.Dial / needle.Reader take it
	UCXAddr string // "127.0.0.1:port" (or where ListenAddr said) when Options.Listen
	cmd     *exec.Cmd
	exited  chan struct{}
	once    sync.Once
}

var listeningRE = regexp.MustCompile(`UCX listening.*\baddress=(\S+)`)
var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// ListeningAddr returns the address of an engine log line "UCX listening address=IP:PORT"
// (colour codes ignored), the port the engine bound for `listen = "...:0"`.
func ListeningAddr(line string) (string, bool) {
	m := listeningRE.FindStringSubmatch(ansiRE.ReplaceAllString(line, ""))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// Start writes the config, starts the engine and returns once its control socket accepts
// connections (and its UCX listener is up, when asked).
func Start(ctx context.Context, o Options) (*Engine, error) {
	if o.Transports == "" {
		o.Transports = "tcp"
	}
	if o.LogFilter == "" {
		o.LogFilter = "info"
	}
	e := &Engine{Socket: filepath.Join(o.Dir, "engine.sock"), exited: make(chan struct{})}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "[control]\nsocket = %q\n\n[workers]\nidle-spin-us = 200\n", e.Socket)
	if len(o.Cores) > 0 {
		fmt.Fprintf(&cfg, "cores = %s\n", intList(o.Cores))
	}
	fmt.Fprintf(&cfg, "\n[memory]\nhugepages = \"prefer\"\n\n[ucx]\ntransports = %q\n", o.Transports)
	if o.ListenAddr != "" {
		o.Listen = true
	}
	if o.Listen {
		listen := o.ListenAddr
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		fmt.Fprintf(&cfg, "listen = %q\n", listen)
	}
	if o.RequestTimeoutMS > 0 {
		fmt.Fprintf(&cfg, "request-timeout-ms = %d\n", o.RequestTimeoutMS)
	}
	if len(o.VolumeDirs) > 0 {
		fmt.Fprintf(&cfg, "\n[seaweedfs]\ndirectories = %s\n", stringList(o.VolumeDirs))
		if o.SecurityTOML != "" {
			fmt.Fprintf(&cfg, "security-toml = %q\n", o.SecurityTOML)
		}
	}
	conf := filepath.Join(o.Dir, "engine.toml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	os.Remove(e.Socket)
	log := o.Log
	var logFile *os.File
	if log == nil {
		f, err := os.Create(filepath.Join(o.Dir, "engine.log"))
		if err != nil {
			return nil, err
		}
		log, logFile = f, f
	}
	addr := make(chan string, 1)
	argv := []string{o.Bin, "--config", conf}
	if o.Netns != "" {
		// ip execs the engine in place: Pid and the signals are the engine's.
		argv = append([]string{"ip", "netns", "exec", o.Netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "RUST_LOG="+o.LogFilter)
	cmd.Stdout = log
	cmd.Stderr = &LineTap{Out: log, Line: func(l string) {
		if a, ok := ListeningAddr(l); ok {
			select {
			case addr <- a:
			default:
			}
		}
	}}
	// Do not outlive a parent that dies (test timeout, panic).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("enginectl: start %s: %w", o.Bin, err)
	}
	e.cmd = cmd
	go func() {
		cmd.Wait() // returns after the log has been copied
		if logFile != nil {
			logFile.Close()
		}
		close(e.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The socket file appears at bind(), a moment before listen(): wait for a connect.
		if conn, err := net.Dial("unixpacket", e.Socket); err == nil {
			conn.Close()
			break
		}
		select {
		case <-e.exited:
			return nil, fmt.Errorf("enginectl: engine exited at start (%v); log in %s", cmd.ProcessState, o.Dir)
		case <-ctx.Done():
			e.Kill()
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Kill()
			return nil, errors.New("enginectl: engine did not create its control socket within 30s")
		}
	}
	if o.Listen {
		select {
		case e.UCXAddr = <-addr:
		case <-e.exited:
			return nil, fmt.Errorf("enginectl: engine exited (%v)", cmd.ProcessState)
		case <-time.After(time.Until(deadline)):
			e.Kill()
			return nil, errors.New(`enginectl: engine logged no "UCX listening" line`)
		}
	}
	return e, nil
}

// Stop asks the engine to drain and exit (SIGTERM) and waits; SIGKILL after 20 s.
func (e *Engine) Stop() { e.end(syscall.SIGTERM) }

// Kill ends the engine at once (SIGKILL), as a crash would, and waits.
func (e *Engine) Kill() { e.end(syscall.SIGKILL) }

// Pid is the engine's process id.
func (e *Engine) Pid() int { return e.cmd.Process.Pid }

func (e *Engine) end(sig syscall.Signal) {
	e.once.Do(func() {
		e.cmd.Process.Signal(sig)
		select {
		case <-e.exited:
		case <-time.After(20 * time.Second):
			e.cmd.Process.Kill()
			<-e.exited
		}
	})
}

func intList(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func stringList(v []string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// LineTap copies a log to Out and hands every complete line to Line.
type LineTap struct {
	Out     io.Writer
	Line    func(string)
	partial []byte
}

func (w *LineTap) Write(p []byte) (int, error) {
	w.Out.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.Line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 { // no newline in sight: not a line we look for
		w.partial = w.partial[:0]
	}
	return len(p), nil
}
