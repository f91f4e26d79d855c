// Command parked: many goroutines alive at once, each blocked receiving on
// one channel.
//
//	parked [goroutines]     (default 1,000,000)
//
// parked-create: ns per goroutine from the first spawn until all are blocked
// (each calls Done on a WaitGroup right before it blocks). parked-mem: bytes
// per goroutine of VmRSS + VmPTE, after minus before. Then the channel is
// closed and every goroutine finishes.
package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"weft.bench/peers/peer"
)

func main() {
	n := peer.Count(1000000)

	release := make(chan struct{})
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)

	runtime.GC()
	mem0 := peer.MemBytes()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			parked.Done()
			<-release
			done.Done()
		}()
	}
	parked.Wait()
	d := time.Since(t0)
	mem1 := peer.MemBytes()

	close(release)
	done.Wait()

	fmt.Printf("# %s, GOMAXPROCS=%d, %d goroutines\n", runtime.Version(), runtime.GOMAXPROCS(0), n)
	peer.Result("parked-create", "go", float64(d.Nanoseconds())/float64(n), "ns")
	peer.Result("parked-mem", "go", float64(mem1-mem0)/float64(n), "B")
}
