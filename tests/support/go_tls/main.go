// A Go HTTPS peer for tests/tls.rs, with only the standard library (crypto/tls, net/http and
// its own HTTP/2).
//
//	go_tls server CERT KEY     listens on 127.0.0.1 (a free port, printed as "port N"), serves
//	                           HTTP/1.1 and HTTP/2 by ALPN; prints "METHOD TARGET STATUS PROTO"
//	                           per answer (not with GO_TLS_QUIET set: the benchmarks' load);
//	                           stops when stdin closes
//	go_tls client CA PORT      makes the requests below, one at a time (HTTP/1.1 on one kept-
//	                           alive connection, then HTTP/2 on one); prints "METHOD TARGET
//	                           STATUS BYTES" per response it read whole. With GO_TLS_PAUSE set,
//	                           prints "paused" after the first and waits for a line on stdin
//	                           before the next (the tests start the agent meanwhile)
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

func body(target string) string {
	if target == "/missing" {
		return "no such thing\n"
	}
	return "answer to " + target + "\n"
}

func server(certFile, keyFile string) error {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	quiet := os.Getenv("GO_TLS_QUIET") != ""
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		status := http.StatusOK
		if r.URL.Path == "/missing" {
			status = http.StatusNotFound
		}
		text := body(r.URL.Path)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", fmt.Sprint(len(text)))
		w.WriteHeader(status)
		io.WriteString(w, text)
		if quiet {
			return
		}
		mu.Lock()
		fmt.Printf("%s %s %d %s\n", r.Method, r.URL.Path, status, r.Proto)
		mu.Unlock()
	})
	srv := &http.Server{Handler: handler}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		srv.Close()
	}()
	fmt.Printf("port %d\n", listener.Addr().(*net.TCPAddr).Port)
	err = srv.ServeTLS(listener, certFile, keyFile)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

type request struct {
	method, target, payload string
}

func client(caFile, port string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	base := "https://127.0.0.1:" + port
	pause := os.Getenv("GO_TLS_PAUSE") != ""
	stdin := bufio.NewReader(os.Stdin)
	run := func(c *http.Client, requests []request) error {
		for i, r := range requests {
			if pause && i == 1 {
				pause = false
				fmt.Println("paused")
				if _, err := stdin.ReadString('\n'); err != nil {
					return err
				}
			}
			var payload io.Reader
			if r.payload != "" {
				payload = strings.NewReader(r.payload)
			}
			req, err := http.NewRequest(r.method, base+r.target, payload)
			if err != nil {
				return err
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			fmt.Printf("%s %s %d %d\n", r.method, r.target, resp.StatusCode, n)
		}
		c.CloseIdleConnections()
		return nil
	}
	http1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
	}}
	if err := run(http1, []request{
		{"GET", "/one", ""},
		{"GET", "/missing", ""},
		{"POST", "/submit", "name=netsonde&kind=test"},
	}); err != nil {
		return err
	}
	http2 := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
	return run(http2, []request{{"GET", "/h2/one", ""}, {"GET", "/missing", ""}})
}

func main() {
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "server":
		err = server(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "client":
		err = client(os.Args[2], os.Args[3])
	default:
		err = fmt.Errorf("usage: go_tls server CERT KEY | client CA PORT")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
