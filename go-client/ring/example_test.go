package ring_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/ring"
)

// Connect to a running engine, run a NOP, then have the engine fill a shared buffer that
// is read in place.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := ring.Dial(ctx, exampleSocket) // "" means ring.DefaultSocketPath()
	if errors.Is(err, ring.ErrEngineUnavailable) {
		fmt.Println("engine not running")
		return
	}
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()

	if err := c.Nop(ctx); err != nil {
		fmt.Println("nop:", err)
		return
	}

	buf, err := c.AllocBuffer(ctx, 4096)
	if err != nil {
		fmt.Println("alloc:", err)
		return
	}
	defer buf.Release()
	n, err := c.Fill(ctx, buf, 0, 16, 'x')
	if err != nil {
		fmt.Println("fill:", err)
		return
	}
	fmt.Printf("filled %d bytes: %s\n", n, buf.Bytes()[:n])

	// Many requests in flight: submit now, wait later.
	reqs := make([]ring.Request, 8)
	for i := range reqs {
		reqs[i].Opcode = ring.OpNop
	}
	tickets := make([]ring.Ticket, len(reqs))
	k, err := c.SubmitBatch(ctx, reqs, tickets)
	if err == nil {
		err = ring.WaitAll(ctx, tickets[:k])
	}
	fmt.Println("batch:", k, err)
	// Output:
	// filled 16 bytes: xxxxxxxxxxxxxxxx
	// batch: 8 <nil>
}

// Register a peer engine by its UCX listener address and send it a request: the echo
// service answers with the request bytes, written straight into the response buffer.
func ExampleClient_Send() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ring.Dial(ctx, exampleSocket)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer c.Close()

	peer, err := c.ConnectPeer(ctx, "127.0.0.1:13337") // the peer engine's ucx.listen
	if err != nil {
		fmt.Println("connect peer:", err)
		return
	}
	req, _ := c.AllocBuffer(ctx, 4096)
	defer req.Release()
	resp, _ := c.AllocBuffer(ctx, 4096)
	defer resp.Release()

	k := copy(req.Bytes(), "hello, peer")
	n, err := c.Send(ctx, peer, ring.ServiceEcho, req.Slice(0, k), resp)
	if err != nil {
		fmt.Println("send:", err)
		return
	}
	fmt.Printf("%d bytes back: %s\n", n, resp.Bytes()[:n])

	_, err = c.ConnectPeer(ctx, "not an address")
	fmt.Println(errors.Is(err, ring.ErrBadPeerAddress), c.Err())
	// Output:
	// 11 bytes back: hello, peer
	// true <nil>
}
