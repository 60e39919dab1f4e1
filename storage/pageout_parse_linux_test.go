package storage

import (
	"slices"
	"testing"
)

func TestMappedFiles(t *testing.T) {
	s := &Store{mappedDir: "/data/hook batch"}
	maps := []byte(`55d0c0000000-55d0c0100000 r-xp 00000000 fd:00 12 /usr/bin/hookbatch
7f0000000000-7f0008000000 rw-s 00000000 fd:00 101 /data/hook batch/000003.vlog
7f0008000000-7f0010000000 rw-s 00000000 fd:00 102 /data/hook batch/000004.vlog (deleted)
7f0010000000-7f0010200000 r--s 00000000 fd:00 103 /data/hook batch/000017.sst
7f0010200000-7f0010400000 r--s 00001000 fd:00 104 /data/hook batch/000018.sst
7f0010400000-7f0011400000 rw-s 00000000 fd:00 105 /data/hook batch/00001.mem
7f0011400000-7f0011600000 r--s 00000000 fd:00 106 /data/hook batch/sub/000019.sst
7f0011600000-7f0011800000 r--s 00000000 fd:00 107 /data/hook batch2/000020.sst
7f0011800000-7f0011a00000 r--s 00000000 fd:00 108 /data/hook batch/DISCARD
7f0011a00000-7f0011c00000 rw-p 00000000 00:00 0
7f0011c00000-7f0011e00000 r--s 00000000 fd:00 109 /data/hook batch/000021.sst`)
	got := s.mappedFiles(maps)
	want := []mappedRegion{
		{start: 0x7f0000000000, end: 0x7f0008000000, path: "/data/hook batch/000003.vlog", vlog: true, fid: 3},
		{start: 0x7f0010000000, end: 0x7f0010200000, path: "/data/hook batch/000017.sst", fid: 17},
		{start: 0x7f0011c00000, end: 0x7f0011e00000, path: "/data/hook batch/000021.sst", fid: 21},
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
