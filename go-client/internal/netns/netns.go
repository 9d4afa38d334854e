// Package netns runs processes in, and dials from, named network namespaces (those of
// `ip netns`, as scripts/netns makes them): the end-to-end tests and the bench put a volume
// server and its engine on one side of a veth pair and a client on the other, as two hosts.
// Everything here needs root.
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path is the namespace file `ip netns add name` creates.
func Path(name string) string { return filepath.Join("/var/run/netns", name) }

// Command is the argv that runs argv in namespace name (`ip netns exec`, which execs the
// program in place: its pid and signals are the program's).
func Command(name string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", name}, argv...)
}

// DialFunc is the signature of net.Dialer.DialContext and http.Transport.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer returns a DialFunc whose connections are made in namespace name: the socket is
// created on a thread switched into it (setns) and keeps that namespace for its life, while
// the rest of the process stays where it is. Give it to an http.Transport to make HTTP
// requests from that namespace. Addresses should be IP literals (a name is resolved in
// the namespace too, from the host's resolver files).
func Dialer(name string) DialFunc {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		target, err := os.Open(Path(name))
		if err != nil {
			return nil, fmt.Errorf("netns %s: %w", name, err)
		}
		defer target.Close()
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("netns: this thread's namespace: %w", err)
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("netns %s: setns: %w", name, err)
		}
		conn, dialErr := d.DialContext(ctx, network, addr)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it ends with this goroutine instead of running
			// other goroutines in the wrong namespace.
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("netns: back from %s: setns: %w", name, err)
		}
		runtime.UnlockOSThread()
		return conn, dialErr
	}
}
