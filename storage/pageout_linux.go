package storage

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Badger writes and reads its value log and its tables through shared
// memory maps, and a page once touched stays in the process's RSS until the
// kernel wants the memory back: a backlog of a million 300-byte events
// showed as ~460 MB of file-backed RSS beside the heap, growing with the
// backlog (DESIGN §2.4 says RSS must not). So, once the process maps more
// file-backed memory than the store's budget, the store advises the kernel
// to page out what its value-log and table files map (MADV_PAGEOUT), but
// for the newest keepWarm bytes of the value log, which a delivery keeping
// up is about to read, and of the newest tables, which compactions are about
// to read.
//
// The advice cannot change data: the kernel drops clean pages (already on
// disk) and leaves dirty ones for writeback (with sync_writes off they leave
// RSS but stay in the page cache until written), and a later read faults
// the page back in. So a mapping that Badger unmaps between our reading of
// /proc/self/maps and the advice costs nothing either: whatever the range
// holds by then is only paged out, never discarded.
//
// The budget counts the whole process's file-backed RSS, which also holds
// the program and Badger's memtable logs, pages the advice cannot take: so
// after a pass, the next one waits until another pageOutStep has been
// mapped, and a budget those alone exceed does not make every tick a pass.

const (
	keepWarm    = 8 << 20  // bytes of the newest value-log file, and of the newest tables, left resident
	pageOutStep = 32 << 20 // file-backed RSS to add after a pass before the next
)

// pageOutWorks reports whether the kernel takes MADV_PAGEOUT (Linux 5.4
// and later, and not refused by a sandbox), tried on a page of our own.
func pageOutWorks() bool {
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return false
	}
	defer unix.Munmap(b)
	b[0] = 1
	return unix.Madvise(b, unix.MADV_PAGEOUT) == nil
}

// pageOutDue reports whether file-backed RSS rss calls for a pass, given
// the budget and the RSS right after the last pass (floor).
func pageOutDue(rss, budget, floor int64) bool {
	return budget > 0 && rss > max(budget, floor+pageOutStep)
}

// pageOut runs the advice described above when pageOutDue says so.
func (s *Store) pageOut() {
	if s.mappedDir == "" {
		return
	}
	rss, err := fileRSS()
	if err != nil {
		return
	}
	// Files unmapped since the last pass (compactions, value-log GC) lower
	// the floor with them.
	s.mappedFloor = min(s.mappedFloor, rss)
	if !pageOutDue(rss, s.mappedBudget, s.mappedFloor) {
		return
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	regions := s.mappedFiles(maps)
	// Newest first: the newest value-log file, then the newest tables,
	// keep their warm parts.
	slices.SortFunc(regions, func(a, b mappedRegion) int { return b.fid - a.fid })
	newestLog, tables := true, uintptr(0)
	page := uintptr(os.Getpagesize())
	for _, r := range regions {
		length := r.end - r.start
		if r.vlog {
			var st unix.Stat_t
			if unix.Stat(r.path, &st) != nil {
				continue
			}
			if newestLog {
				// Preallocated sparse and written front to back: the
				// allocated blocks are about what was written.
				length = min(length, uintptr(st.Blocks)*512)
				length -= min(length, keepWarm)
				newestLog = false
			} else {
				length = min(length, uintptr(st.Size))
			}
		} else if tables += length; tables <= keepWarm {
			continue
		}
		if length &^= page - 1; length > 0 {
			// An error (a range unmapped meanwhile) costs only this range.
			_, _, _ = unix.Syscall(unix.SYS_MADVISE, r.start, length, unix.MADV_PAGEOUT)
		}
	}
	if after, err := fileRSS(); err == nil {
		s.mappedFloor = after
	}
}

// mappedRegion is one mapping of a store file, as /proc/self/maps shows it.
type mappedRegion struct {
	start, end uintptr
	path       string
	vlog       bool // a value-log file, else a table
	fid        int  // the file's number: higher is newer
}

// mappedFiles lists the mappings of the store's value-log and table files
// that start at the beginning of their file (as Badger maps them).
func (s *Store) mappedFiles(maps []byte) []mappedRegion {
	var out []mappedRegion
	for len(maps) > 0 {
		line := maps
		if i := bytes.IndexByte(maps, '\n'); i >= 0 {
			line, maps = maps[:i], maps[i+1:]
		} else {
			maps = nil
		}
		// start-end perms offset dev inode path (which may hold spaces)
		var f [5][]byte
		for i := range f {
			line = bytes.TrimLeft(line, " ")
			end := bytes.IndexByte(line, ' ')
			if end < 0 {
				end = len(line)
			}
			f[i], line = line[:end], line[end:]
		}
		path := string(bytes.TrimLeft(line, " "))
		if string(f[2]) != "00000000" {
			continue
		}
		if filepath.Dir(path) != s.mappedDir {
			continue
		}
		name := filepath.Base(path)
		ext := filepath.Ext(name)
		if ext != ".vlog" && ext != ".sst" {
			continue
		}
		fid, err := strconv.Atoi(name[:len(name)-len(ext)])
		if err != nil {
			continue
		}
		r := mappedRegion{path: path, vlog: ext == ".vlog", fid: fid}
		dash := bytes.IndexByte(f[0], '-')
		if dash < 0 {
			continue
		}
		start, err1 := strconv.ParseUint(string(f[0][:dash]), 16, 64)
		end, err2 := strconv.ParseUint(string(f[0][dash+1:]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		r.start, r.end = uintptr(start), uintptr(end)
		out = append(out, r)
	}
	return out
}

// fileRSS is the process's resident file-backed memory, in bytes.
func fileRSS() (int64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	_, rest, ok := bytes.Cut(status, []byte("\nRssFile:"))
	if !ok {
		return 0, os.ErrNotExist
	}
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	}
	kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte(" kB"))), 10, 64)
	if err != nil {
		return 0, err
	}
	return kb << 10, nil
}

// realDir is dir as the kernel names it in /proc/self/maps.
func realDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}
