package storage

import (
	"slices"
	"testing"
)

func TestMappedFiles(t *testing.T) {
	s := &Store{mappedDir: "/data/hook batch"}
	maps := []byte(`8000000-8100000 r-xp 00000000 fd:00 12 /usr/bin/hookbatch
40000000-48000000 rw-s 00000000 fd:00 101 /data/hook batch/000003.vlog
48000000-50000000 rw-s 00000000 fd:00 102 /data/hook batch/000004.vlog (deleted)
50000000-50200000 r--s 00000000 fd:00 103 /data/hook batch/000017.sst
50200000-50400000 r--s 00001000 fd:00 104 /data/hook batch/000018.sst
50400000-51400000 rw-s 00000000 fd:00 105 /data/hook batch/00001.mem
51400000-51600000 r--s 00000000 fd:00 106 /data/hook batch/sub/000019.sst
51600000-51800000 r--s 00000000 fd:00 107 /data/hook batch2/000020.sst
51800000-51a00000 r--s 00000000 fd:00 108 /data/hook batch/DISCARD
51a00000-51c00000 rw-p 00000000 00:00 0
51c00000-51e00000 r--s 00000000 fd:00 109 /data/hook batch/000021.sst`)
	got := s.mappedFiles(maps)
	want := []mappedRegion{
		{start: 0x40000000, end: 0x48000000, path: "/data/hook batch/000003.vlog", vlog: true, fid: 3},
		{start: 0x50000000, end: 0x50200000, path: "/data/hook batch/000017.sst", fid: 17},
		{start: 0x51c00000, end: 0x51e00000, path: "/data/hook batch/000021.sst", fid: 21},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("mappedFiles:\n got %+v\nwant %+v", got, want)
	}
}

func TestPageOutDue(t *testing.T) {
	f := func(rss, budget, floor int64, want bool) {
		t.Helper()
		if got := pageOutDue(rss, budget, floor); got != want {
			t.Fatalf("pageOutDue(%d MiB, budget %d MiB, floor %d MiB) = %v", rss>>20, budget>>20, floor>>20, got)
		}
	}
	f(100<<20, 96<<20, 0, true)
	f(90<<20, 96<<20, 0, false)
	f(100<<20, 0, 0, false) // no budget: never
	// After a pass left 150 MiB the advice cannot take, the next waits for
	// another 32 MiB.
	f(160<<20, 96<<20, 150<<20, false)
	f(183<<20, 96<<20, 150<<20, true)
	// A floor below the budget does not lower it.
	f(50<<20, 96<<20, 10<<20, false)
}
