// run_probe.go: a Go program (built with CGO_ENABLED=0, so statically linked and making its
// own syscalls) for test_run (sockctl run). One line out: "ok ..." or "errno N ...".
//
//	get URL        HTTP GET, prints the status and the body's length
//	udp HOST:PORT  a connected UDP socket: write "ping", read the reply (2 s)
//	sendto HOST:PORT  an unconnected UDP socket: WriteTo "ping", read the reply (2 s)
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

func fail(err error) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		fmt.Printf("errno %d (%v)\n", int(errno), err)
	} else {
		fmt.Printf("error (%v)\n", err)
	}
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: run_probe_go get URL | udp HOST:PORT | sendto HOST:PORT")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "get":
		c := http.Client{Timeout: 10 * time.Second}
		r, err := c.Get(os.Args[2])
		if err != nil {
			fail(err)
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Printf("ok status=%d len=%d\n", r.StatusCode, len(b))
	case "udp", "sendto":
		var c net.Conn
		var err error
		buf := make([]byte, 64)
		if os.Args[1] == "udp" {
			c, err = net.Dial("udp", os.Args[2])
			if err == nil {
				_, err = c.Write([]byte("ping"))
			}
		} else {
			var pc net.PacketConn
			var dst *net.UDPAddr
			dst, err = net.ResolveUDPAddr("udp", os.Args[2])
			if err == nil {
				pc, err = net.ListenPacket("udp4", "0.0.0.0:0")
			}
			if err == nil {
				_, err = pc.WriteTo([]byte("ping"), dst)
				pc.SetReadDeadline(time.Now().Add(2 * time.Second))
				if err == nil {
					n, _, rerr := pc.ReadFrom(buf)
					if rerr != nil {
						fail(rerr)
					}
					fmt.Printf("ok reply=%s\n", buf[:n])
					return
				}
			}
		}
		if err != nil {
			fail(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			fail(err)
		}
		fmt.Printf("ok reply=%s\n", buf[:n])
	default:
		os.Exit(2)
	}
}
