package weedfront

import (
	"bytes"
	"io"
	"testing"
)

// The bytes an upload streams (PagesReader, read in odd-sized pieces) are the bytes every
// reader is checked against (FillPages at any page offset), and different names differ.
func TestPagesReaderMatchesFillPages(t *testing.T) {
	const size = 3*Page + 123
	seed := SeedOf("/bench/data.bin")
	var got bytes.Buffer
	r := &PagesReader{Seed: seed, Size: size}
	buf := make([]byte, 1000) // not a divisor of Page
	if _, err := io.CopyBuffer(&got, struct{ io.Reader }{r}, buf); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4*Page)
	FillPages(want, seed, 0)
	if got.Len() != size || !bytes.Equal(got.Bytes(), want[:size]) {
		t.Fatalf("PagesReader streamed %d bytes, equal to FillPages: %v", got.Len(), bytes.Equal(got.Bytes(), want[:min(got.Len(), size)]))
	}
	page2 := make([]byte, Page)
	FillPages(page2, seed, 2*Page)
	if !bytes.Equal(page2, want[2*Page:3*Page]) {
		t.Error("FillPages at page 2 differs from the same page of a whole fill")
	}
	other := make([]byte, Page)
	FillPages(other, SeedOf("/bench/other.bin"), 0)
	if bytes.Equal(other, want[:Page]) {
		t.Error("two names generate the same bytes")
	}
}
