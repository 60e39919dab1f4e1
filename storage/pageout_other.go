//go:build !linux

package storage

// Paging out Badger's memory-mapped files is Linux-only (MADV_PAGEOUT);
// elsewhere the kernel alone decides when their pages leave RSS.

func pageOutWorks() bool { return false }

func (s *Store) pageOut() {}

func realDir(string) string { return "" }
