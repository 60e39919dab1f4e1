package storage_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/storage"
	"golang.org/x/sys/unix"
)

// TestMappedFilesLeaveRSS writes a backlog of 160 MB and checks that the
// value-log and table pages Badger touched through its memory maps leave
// the process's RSS (DESIGN §2.4: RSS does not grow with the backlog),
// except the newest 8 MiB of the value log and of the tables and what was
// mapped since the last pass (under 32 MiB).
func TestMappedFilesLeaveRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 160 MB; skipped with -short")
	}
	if !storage.PageOutWorks() {
		t.Skip("this kernel refuses MADV_PAGEOUT (Linux before 5.4, or a sandbox)")
	}
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the temporary directory is on tmpfs: its pages are shared memory, which paging out cannot drop without swap")
	}
	// A budget of one byte: page out at every tick.
	s := mustOpen(t, dir, withSync, storage.WithMappedBudget(1))
	q := mustQueue(t, s, "s")
	data := strings.Repeat("x", 1000)
	items := make([]storage.AppendItem, 1000)
	for i := range 160 {
		for j := range items {
			items[j] = item(fmt.Sprintf("e%d-%d", i, j), data, q)
		}
		mustAppend(t, s, items...)
	}
	const want = 64 << 20
	var rss int64
	var vlogs int
	deadline := time.Now().Add(20 * time.Second)
	for {
		rss, vlogs = mappedRSS(t, dir)
		if rss < want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the store looks every 250 ms
	}
	t.Logf("160 MB written in %d value-log files: %d MiB of their mappings and the tables' resident", vlogs, rss>>20)
	if vlogs < 2 {
		t.Fatalf("found %d mapped value-log files of the store; want the 160 MB in at least 2", vlogs)
	}
	if rss >= want {
		t.Fatalf("the store's mapped files hold %d MiB of RSS with 160 MB written; want under %d MiB", rss>>20, want>>20)
	}
	// Paged out, still readable.
	if d := q.Depth(); d != 160_000 {
		t.Fatalf("queue depth %d, want 160000", d)
	}
	n, want0 := 0, record("e0-0", data)
	err := q.Read(0, 1000, func(_ uint64, rec []byte) bool {
		if n == 0 && string(rec) != string(want0) {
			t.Errorf("first record read back after paging out differs from the one written")
		}
		n++
		return true
	})
	if err != nil || n != 1000 {
		t.Fatalf("Read after paging out: %d records, %v", n, err)
	}
}

// mappedRSS sums the resident memory of the mappings of dir's value-log and
// table files, and counts the value-log files mapped.
func mappedRSS(t *testing.T, dir string) (rss int64, vlogs int) {
	t.Helper()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// start-end perms offset dev inode path, which may hold spaces
			path := ""
			if len(fields) >= 6 {
				path = line[strings.Index(line, fields[5]):]
			}
			in = filepath.Dir(path) == real && (strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".sst"))
			if in && strings.HasSuffix(path, ".vlog") {
				vlogs++
			}
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rss += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rss, vlogs
}
