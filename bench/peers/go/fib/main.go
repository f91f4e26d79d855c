// Command fib: fib(n) with a goroutine per call on all CPUs. Each call with
// n >= 2 runs fib(n-1) in a new goroutine, computes fib(n-2) itself, then
// receives the other half from a channel.
//
//	fib [n]     (default 30; total ms; exits 1 on a wrong result)
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"weft.bench/peers/peer"
)

func fib(n int) int {
	if n < 2 {
		return n
	}
	ch := make(chan int, 1)
	go func() { ch <- fib(n - 1) }()
	y := fib(n - 2)
	return <-ch + y
}

func fibLoop(n int) int {
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func main() {
	n := peer.Count(30)

	if n > 20 {
		fib(20) // warm-up: threads started, free goroutines cached
	}
	t0 := time.Now()
	r := fib(n)
	d := time.Since(t0)

	fmt.Printf("# %s, GOMAXPROCS=%d, fib(%d) = %d\n", runtime.Version(), runtime.GOMAXPROCS(0), n, r)
	if r != fibLoop(n) {
		fmt.Fprintf(os.Stderr, "fib: fib(%d) = %d, expected %d\n", n, r, fibLoop(n))
		os.Exit(1)
	}
	peer.Result("fib", "go", float64(d.Nanoseconds())/1e6, "ms")
}
