// Command httpd: the HTTP server of the http bench, written the way a Go
// user writes one: net/http and a HandlerFunc. Every request, whatever its
// path, gets 200 and the 13-byte body "Hello, World!" as text/plain, on
// keep-alive connections (net/http adds a Date header).
//
//	httpd -p PORT -w WORKERS
//
// It listens on 127.0.0.1:PORT with GOMAXPROCS=WORKERS and serves until
// SIGTERM or SIGINT, then exits 0.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

var body = []byte("Hello, World!")

func hello(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func main() {
	port := flag.Int("p", 0, "port to listen on, on 127.0.0.1")
	workers := flag.Int("w", 1, "CPUs the server may use (GOMAXPROCS)")
	flag.Parse()
	if *port <= 0 || *port > 65535 || *workers <= 0 || flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "usage: %s -p PORT -w WORKERS\n", os.Args[0])
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*workers)

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello)}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		// Close, not Shutdown: a load generator's keep-alive connections
		// are never idle, and the run is over.
		srv.Close()
	}()

	fmt.Printf("# %s net/http, GOMAXPROCS=%d\n", runtime.Version(), *workers)
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}
