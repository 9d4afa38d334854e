package swring_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	swring "github.com/seaweed-ring/seaweed-ring/go-client"
)

// Connect to a running engine, run a NOP, then have the engine fill a shared buffer that
// is read in place.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := swring.Dial(ctx, exampleSocket) // "" means swring.DefaultSocketPath()
	if errors.Is(err, swring.ErrEngineUnavailable) {
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
	reqs := make([]swring.Request, 8)
	for i := range reqs {
		reqs[i].Opcode = swring.OpNop
	}
	tickets := make([]swring.Ticket, len(reqs))
	k, err := c.SubmitBatch(ctx, reqs, tickets)
	if err == nil {
		err = swring.WaitAll(ctx, tickets[:k])
	}
	fmt.Println("batch:", k, err)
	// Output:
	// filled 16 bytes: xxxxxxxxxxxxxxxx
	// batch: 8 <nil>
}
