// Command chan-pingpong: two goroutines passing a counter back and forth
// over two unbuffered channels, with GOMAXPROCS=1 and then GOMAXPROCS=2.
// One round trip = ping, then pong (A -> B -> A); each side adds one to the
// counter, which must come back as 2 * round trips (exit 1 otherwise).
// Where the goroutines run is left to Go's scheduler.
//
//	chan-pingpong [round-trips]     (default 500,000)
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"weft.bench/peers/peer"
)

// roundTrips runs n round trips and returns the counter's final value.
func roundTrips(n int) int {
	ping := make(chan int)
	pong := make(chan int)
	done := make(chan int)
	go func() {
		v := 0
		for i := 0; i < n; i++ {
			ping <- v + 1
			v = <-pong
		}
		done <- v
	}()
	go func() {
		for i := 0; i < n; i++ {
			v := <-ping
			pong <- v + 1
		}
	}()
	return <-done
}

func main() {
	n := peer.Count(500000)

	fmt.Printf("# %s, unbuffered chan int, GOMAXPROCS=1 then 2, %d round trips\n", runtime.Version(), n)
	for _, procs := range []int{1, 2} {
		runtime.GOMAXPROCS(procs)
		roundTrips(n/10 + 1) // warm-up
		t0 := time.Now()
		v := roundTrips(n)
		d := time.Since(t0)
		if v != 2*n {
			fmt.Fprintf(os.Stderr, "chan-pingpong: counter %d after %d round trips, expected %d\n", v, n, 2*n)
			os.Exit(1)
		}
		peer.Result("chan-pingpong", fmt.Sprintf("go@%d", procs), float64(d.Nanoseconds())/float64(n), "ns")
	}
}
