// Package peer holds what every Go peer program shares: the optional count
// argument, the result line and the memory probe.
//
// A peer prints one line per measured figure on stdout,
//
//	result <bench> <impl> <value> <unit>
//
// and anything else for people, prefixed by '#'. bench/run.sh reads only the
// result lines.
package peer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Count returns the optional first argument, the repetition count, or def.
// Anything that is not a positive number is an error: a typo must not
// silently measure the default.
func Count(def int) int {
	if len(os.Args) < 2 {
		return def
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "usage: %s [count]  (count must be a positive integer)\n", os.Args[0])
		os.Exit(2)
	}
	return n
}

// Result prints one result line.
func Result(bench, impl string, value float64, unit string) {
	fmt.Printf("result %s %s %.2f %s\n", bench, impl, value, unit)
}

// MemBytes returns VmRSS + VmPTE from /proc/self/status in bytes: the
// resident pages plus the page tables that map them.
func MemBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	var sum int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && (fields[0] == "VmRSS:" || fields[0] == "VmPTE:") {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			sum += kb * 1024 // the kernel prints kB
		}
	}
	return sum
}
