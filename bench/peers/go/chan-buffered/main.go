// Command chan-buffered: elements through one buffered channel (capacity
// 128) on all CPUs (GOMAXPROCS left at its default): one producer and one
// consumer (chan-buffered-1x1), then four of each (chan-buffered-4x4).
// Producers send 1..n between them; the channel is closed once they are all
// done, and the consumers receive until it is closed and drained. The sum of
// what they received must be n(n+1)/2 (exit 1 otherwise).
//
//	chan-buffered [elements]     (default 2,000,000)
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"weft.bench/peers/peer"
)

const capacity = 128

// transfer sends 1..n through one channel with p producers and c consumers
// and returns the sum the consumers received.
func transfer(n, p, c int) int64 {
	ch := make(chan int64, capacity)
	var prod, cons sync.WaitGroup
	sums := make([]int64, c*8) // one per consumer, 64 bytes apart
	prod.Add(p)
	for k := 0; k < p; k++ {
		lo, hi := n*k/p+1, n*(k+1)/p
		go func() {
			for v := lo; v <= hi; v++ {
				ch <- int64(v)
			}
			prod.Done()
		}()
	}
	cons.Add(c)
	for k := 0; k < c; k++ {
		k := k
		go func() {
			var s int64
			for v := range ch {
				s += v
			}
			sums[k*8] = s
			cons.Done()
		}()
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	var total int64
	for k := 0; k < c; k++ {
		total += sums[k*8]
	}
	return total
}

func main() {
	n := peer.Count(2000000)

	fmt.Printf("# %s, GOMAXPROCS=%d, chan int64 of capacity %d, %d elements\n",
		runtime.Version(), runtime.GOMAXPROCS(0), capacity, n)
	for _, pc := range []int{1, 4} {
		transfer(n/10+1, pc, pc) // warm-up
		t0 := time.Now()
		s := transfer(n, pc, pc)
		d := time.Since(t0)
		want := int64(n) * int64(n+1) / 2
		if s != want {
			fmt.Fprintf(os.Stderr, "chan-buffered: %dx%d received a sum of %d, expected %d\n", pc, pc, s, want)
			os.Exit(1)
		}
		peer.Result(fmt.Sprintf("chan-buffered-%dx%d", pc, pc), "go", float64(d.Nanoseconds())/float64(n), "ns")
	}
}
