// Command switch: two goroutines on one thread (GOMAXPROCS=1) calling
// runtime.Gosched() in turn. One round trip = each of the two yielded once
// (A -> B -> A).
//
//	switch [round-trips]     (default 1,000,000)
package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"weft.bench/peers/peer"
)

// roundTrips runs n round trips. The main goroutine is blocked in Wait, so
// only the two yielders are runnable and each Gosched hands the thread to
// the other.
func roundTrips(n int) {
	var wg sync.WaitGroup
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
}

func main() {
	n := peer.Count(1000000)
	runtime.GOMAXPROCS(1)

	roundTrips(n/10 + 1) // warm-up
	t0 := time.Now()
	roundTrips(n)
	d := time.Since(t0)

	fmt.Printf("# %s, GOMAXPROCS=1, %d round trips\n", runtime.Version(), n)
	peer.Result("switch", "go", float64(d.Nanoseconds())/float64(n), "ns")
}
