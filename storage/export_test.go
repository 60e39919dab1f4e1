package storage

// ReclaimIfFull runs the quota reclamation check now, for tests.
func (s *Store) ReclaimIfFull() { s.reclaimIfFull() }

// UpdateDiskUsage measures the data directory now, for tests.
func (s *Store) UpdateDiskUsage() { s.updateDiskUsage() }

// Reclaim runs the space reclamation now, full or not, for tests.
func (s *Store) Reclaim() { s.reclaim() }

// WithMappedBudget sets the file-backed RSS over which the store pages out
// its mapped files, for tests.
func WithMappedBudget(n int64) func(*Options) {
	return func(o *Options) { o.mappedBudget = n }
}

// PageOutWorks reports whether this kernel takes MADV_PAGEOUT.
var PageOutWorks = pageOutWorks

// KillChild runs tests of this binary in a child and kills it, for the
// crash tests.
var KillChild = killChild
