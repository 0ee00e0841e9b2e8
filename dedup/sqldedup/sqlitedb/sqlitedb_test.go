package sqlitedb

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"modernc.org/libc"
	"modernc.org/libc/sys/types"
)

// The warm-up's effect, checked where it shows: after a block of a size
// class is freed, the allocator's page for that class is still mapped. Each
// check runs in a fresh process (this test binary, re-executed), since the
// warm-up lasts for the process's lifetime and other tests use the
// allocator too.
func TestKeepAllocatorWarm(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/maps")
	}
	if mode := os.Getenv("SQLITEDB_ALLOC_CHECK"); mode != "" {
		allocCheck(mode == "warm")
		return
	}
	run := func(mode string) map[string]int {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKeepAllocatorWarm$")
		cmd.Env = append(os.Environ(), "SQLITEDB_ALLOC_CHECK="+mode)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s check: %v\n%s", mode, err, out)
		}
		states := map[string]int{}
		for log := minClassLog; log <= maxClassLog; log++ {
			prefix := fmt.Sprintf("class %d: ", log)
			for _, l := range strings.Split(string(out), "\n") {
				if state, ok := strings.CutPrefix(l, prefix); ok {
					states[state]++
				}
			}
		}
		t.Logf("%s: %v", mode, states)
		return states
	}
	classes := maxClassLog - minClassLog + 1
	// Without the warm-up, freeing a class's only block unmaps its page
	// (the C runtime's own long-lived blocks keep one or two classes
	// mapped): this is what the warm-up is for, and shows that the check
	// can fail.
	if cold := run("cold"); cold["unmapped"] < classes/2 {
		t.Errorf("cold: %d of %d classes unmapped after free, want most: %v", cold["unmapped"], classes, cold)
	}
	if warm := run("warm"); warm["mapped"] != classes {
		t.Errorf("warm: %d of %d classes still mapped after free, want all: %v", warm["mapped"], classes, warm)
	}
}

// allocCheck allocates and frees one block per size class and prints
// whether the block's page is still mapped after the free.
func allocCheck(warm bool) {
	if warm {
		KeepAllocatorWarm()
	}
	tls := libc.NewTLS()
	defer tls.Close()
	for log := minClassLog; log <= maxClassLog; log++ {
		p := libc.Xmalloc(tls, types.Size_t(1)<<log)
		if p == 0 {
			fmt.Printf("class %d: malloc failed\n", log)
			continue
		}
		if !mapped(p) {
			fmt.Printf("class %d: block not mapped while allocated\n", log)
			continue
		}
		libc.Xfree(tls, p)
		state := "unmapped"
		if mapped(p) {
			state = "mapped"
		}
		fmt.Printf("class %d: %s\n", log, state)
	}
}

// mapped reports whether address p lies in one of the process's mappings.
func mapped(p uintptr) bool {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lo, hi, ok := strings.Cut(strings.Fields(sc.Text())[0], "-")
		if !ok {
			continue
		}
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uint64(p) >= l && uint64(p) < h {
			return true
		}
	}
	return false
}
