//go:build !linux

package storage

// pageOut is Linux-only (MADV_PAGEOUT); elsewhere the kernel alone decides
// when the pages of Badger's memory-mapped files leave the process's RSS.
func (s *Store) pageOut() {}

func realDir(string) string { return "" }
