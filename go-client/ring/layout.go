package ring

// Layout is where everything sits in a session's region (SPEC.md §3), computed from the
// ring and buffer sizes exactly as ring-proto's RegionLayout::new does.
type Layout struct {
	SQEntries     uint32
	CQEntries     uint32
	SQCtlOffset   uint64
	CQCtlOffset   uint64
	SQArrayOffset uint64
	CQArrayOffset uint64
	BufOffset     uint64
	BufSize       uint64
	// MinRegionSize is the number of bytes the layout needs; a mapping may be larger.
	MinRegionSize uint64
}
