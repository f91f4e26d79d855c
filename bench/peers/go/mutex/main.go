// Command mutex: one sync.Mutex contended by 64 goroutines with
// GOMAXPROCS=2. Each goroutine locks, increments a shared counter and
// unlocks, n/64 times; the counter must end at n (exit 1 otherwise).
//
//	mutex [lock+unlock pairs]     (default 10,000,000)
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"weft.bench/peers/peer"
)

const goroutines = 64

// contend runs n lock + increment + unlock in all, spread over the
// goroutines, and returns the counter.
func contend(n int) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	wg.Add(goroutines)
	for g := 0; g < goroutines; g++ {
		k := n*(g+1)/goroutines - n*g/goroutines
		go func() {
			for i := 0; i < k; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return counter
}

func main() {
	n := peer.Count(10000000)
	runtime.GOMAXPROCS(2)

	contend(n/10 + 1) // warm-up
	t0 := time.Now()
	c := contend(n)
	d := time.Since(t0)

	fmt.Printf("# %s, GOMAXPROCS=2, sync.Mutex, %d goroutines, %d lock+unlock\n", runtime.Version(), goroutines, n)
	if c != n {
		fmt.Fprintf(os.Stderr, "mutex: counter %d, expected %d\n", c, n)
		os.Exit(1)
	}
	peer.Result("mutex", "go", float64(d.Nanoseconds())/float64(n), "ns")
}
