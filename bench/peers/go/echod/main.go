// Command echod: the echo server of the echo bench, written the way a Go
// user writes one: a goroutine per connection copying what it reads back
// through a 64 KiB buffer.
//
//	echod -p PORT -w WORKERS
//
// It listens on 127.0.0.1:PORT with GOMAXPROCS=WORKERS and serves until
// SIGTERM or SIGINT, then exits 0.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// echo writes back every byte read on c until the peer closes or an error.
// Go sets TCP_NODELAY on every TCP connection, so a small echo leaves at once.
func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
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
		fmt.Fprintln(os.Stderr, "echod:", err)
		os.Exit(1)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()

	fmt.Printf("# %s, goroutine per connection, GOMAXPROCS=%d\n", runtime.Version(), *workers)
	for {
		c, err := ln.Accept()
		if err != nil {
			// Out of fds passes when a connection closes: keep serving
			// the others, as net/http does.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			fmt.Fprintln(os.Stderr, "echod:", err)
			os.Exit(1)
		}
		go echo(c)
	}
}
