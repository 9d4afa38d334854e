package ring

import "github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"

// Layout is where everything sits in a session's region (SPEC.md §3), computed from the
// ring and buffer sizes exactly as ring-proto's RegionLayout::new does: the wire package's
// definition, named here for the ring's users.
type Layout = wire.Layout
