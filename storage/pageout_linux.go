package storage

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Badger writes and reads its value log and its tables through shared
// memory maps, and a page once touched stays in the process's RSS until the
// kernel wants the memory back: a backlog of a million 300-byte events
// showed as ~440 MB of file-backed RSS beside the heap, growing with the
// backlog (DESIGN §2.4 says RSS must not). So, once the process maps more
// file-backed memory than the store's budget, the store advises the kernel
// to page out what its value-log and table files map (MADV_PAGEOUT), but
// for the last keepWarm bytes written to the value log, which delivery is
// about to read.
//
// The advice cannot change data: the kernel drops clean pages (already on
// disk) and leaves dirty ones for writeback, and a later read faults the
// page back in. So a mapping that Badger unmaps between our reading of
// /proc/self/maps and the advice costs nothing either: whatever the range
// holds by then is only paged out, never discarded.

// keepWarm is how much of the value log's newest records stays mapped.
const keepWarm = 8 << 20

// pageOut runs the advice described above if the process's file-backed RSS
// is over s.mappedBudget.
func (s *Store) pageOut() {
	if s.mappedBudget <= 0 || s.mappedDir == "" {
		return
	}
	if rss, err := fileRSS(); err != nil || rss <= s.mappedBudget {
		return
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	regions := s.mappedFiles(maps)
	newest := -1
	for _, r := range regions {
		if r.vlog {
			newest = max(newest, r.fid)
		}
	}
	page := uintptr(os.Getpagesize())
	for _, r := range regions {
		length := r.end - r.start
		if r.vlog {
			// Only the written part of a value-log file: Badger
			// preallocates it sparse and writes it front to back.
			var st unix.Stat_t
			if unix.Stat(r.path, &st) != nil {
				continue
			}
			length = min(length, uintptr(st.Blocks)*512)
			if r.fid == newest {
				length -= min(length, keepWarm)
			}
		}
		if length &^= page - 1; length == 0 {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, length, unix.MADV_PAGEOUT); errno != 0 {
			if errno == unix.EINVAL || errno == unix.EPERM {
				// A kernel before 5.4, or one that refuses us: stop asking.
				s.log.Info().Err(errno).Msg("cannot page out the store's memory-mapped files; their pages stay in RSS until the kernel reclaims them")
				s.mappedBudget = 0
				return
			}
		}
	}
}

// mappedRegion is one mapping of a store file, as /proc/self/maps shows it.
type mappedRegion struct {
	start, end uintptr
	path       string
	vlog       bool
	fid        int
}

// mappedFiles lists the mappings of the store's value-log and table files
// that start at the beginning of their file (as Badger maps them).
func (s *Store) mappedFiles(maps []byte) []mappedRegion {
	var out []mappedRegion
	prefix := s.mappedDir + string(filepath.Separator)
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
		if len(path) <= len(prefix) || path[:len(prefix)] != prefix || filepath.Dir(path) != s.mappedDir {
			continue
		}
		r := mappedRegion{path: path}
		name := filepath.Base(path)
		switch filepath.Ext(name) {
		case ".vlog":
			fid, err := strconv.Atoi(name[:len(name)-len(".vlog")])
			if err != nil {
				continue
			}
			r.vlog, r.fid = true, fid
		case ".sst":
		default:
			continue
		}
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
