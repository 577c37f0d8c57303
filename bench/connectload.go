// connectload: HTTP/1.1 keep-alive load over TLS, through an HTTP CONNECT proxy or
// straight to the server, for bench/compare.sh (wrk cannot use a proxy).
//
// Each of -c workers owns one connection for the whole run: (CONNECT, 200,) TLS
// handshake verified against -cacert, then GET after GET on that connection, one in
// flight at a time, as wrk does. A connection is only re-opened after an error or a
// `Connection: close`; `connections=` in the output counts every opened one, so
// keep-alive is visible (it equals -c when nothing was re-opened).
//
// Output, one line:
//
//	CONNECTLOAD requests=N seconds=S rps=R p50_ms=… p90_ms=… p99_ms=… max_ms=…
//	  non2xx=N statuses=200:N[,…] errors=N connections=N first_error="…"
//
// Standard library only: go build -o connectload bench/connectload.go
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	latencies   []time.Duration
	statuses    map[int]int
	errors      int
	connections int
	firstError  string
}

func main() {
	proxy := flag.String("proxy", "", "HTTP proxy host:port to CONNECT through (empty: dial -dial directly)")
	target := flag.String("target", "", "host:port of the TLS server: the CONNECT authority, the Host header and (host part) the TLS server name")
	dial := flag.String("dial", "", "without -proxy: the address to dial (default: -target)")
	caFile := flag.String("cacert", "", "PEM file of the CA that signs the certificate the client sees (the proxy's CA under CONNECT)")
	conns := flag.Int("c", 64, "connections (one request in flight on each)")
	duration := flag.Duration("d", 10*time.Second, "duration")
	path := flag.String("path", "/", "request path")
	var extra headers
	flag.Var(&extra, "H", "extra request header 'Name: value' (repeatable)")
	flag.Parse()
	if *target == "" || *caFile == "" || *conns < 1 {
		fmt.Fprintln(os.Stderr, "connectload: -target and -cacert are required, -c >= 1")
		os.Exit(2)
	}
	host, _, err := net.SplitHostPort(*target)
	if err != nil {
		fmt.Fprintf(os.Stderr, "connectload: -target %q: %v\n", *target, err)
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "connectload: %v\n", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintf(os.Stderr, "connectload: no certificate in %s\n", *caFile)
		os.Exit(2)
	}
	// HTTP/1.1 only, as wrk: no ALPN offered.
	tlsConfig := &tls.Config{ServerName: host, RootCAs: roots}
	if *dial == "" {
		*dial = *target
	}

	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: connectload\r\n", *path, *target)
	for _, h := range extra {
		fmt.Fprintf(&req, "%s\r\n", h)
	}
	req.WriteString("\r\n")
	request := []byte(req.String())

	open := func(deadline time.Time) (net.Conn, *bufio.Reader, error) {
		addr := *dial
		if *proxy != "" {
			addr = *proxy
		}
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, nil, err
		}
		raw.SetDeadline(deadline)
		if *proxy != "" {
			fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", *target, *target)
			br := bufio.NewReader(raw)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				raw.Close()
				return nil, nil, fmt.Errorf("CONNECT: %w", err)
			}
			if resp.StatusCode != http.StatusOK {
				raw.Close()
				return nil, nil, fmt.Errorf("CONNECT answered %s", resp.Status)
			}
			if br.Buffered() > 0 {
				raw.Close()
				return nil, nil, errors.New("CONNECT: bytes after the 200")
			}
		}
		tc := tls.Client(raw, tlsConfig)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("TLS: %w", err)
		}
		return tc, bufio.NewReaderSize(tc, 16<<10), nil
	}

	start := time.Now()
	end := start.Add(*duration)
	results := make([]*result, *conns)
	var wg sync.WaitGroup
	for i := range results {
		r := &result{statuses: map[int]int{}, latencies: make([]time.Duration, 0, 4096)}
		results[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			fail := func(err error) {
				r.errors++
				if r.firstError == "" {
					r.firstError = err.Error()
				}
				if conn != nil {
					conn.Close()
					conn = nil
				}
				time.Sleep(10 * time.Millisecond)
			}
			for time.Now().Before(end) {
				if conn == nil {
					var err error
					conn, br, err = open(end.Add(10 * time.Second))
					if err != nil {
						fail(err)
						continue
					}
					r.connections++
				}
				t0 := time.Now()
				if _, err := conn.Write(request); err != nil {
					fail(err)
					continue
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail(err)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					fail(err)
					continue
				}
				r.latencies = append(r.latencies, time.Since(t0))
				r.statuses[resp.StatusCode]++
				if resp.Close {
					conn.Close()
					conn = nil
				}
			}
			if conn != nil {
				conn.Close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	statuses := map[int]int{}
	errs, opened, non2xx := 0, 0, 0
	firstError := ""
	for _, r := range results {
		all = append(all, r.latencies...)
		for code, n := range r.statuses {
			statuses[code] += n
			if code < 200 || code > 299 {
				non2xx += n
			}
		}
		errs += r.errors
		opened += r.connections
		if firstError == "" {
			firstError = r.firstError
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p*float64(len(all))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(all) {
			i = len(all) - 1
		}
		return float64(all[i]) / float64(time.Millisecond)
	}
	codes := make([]int, 0, len(statuses))
	for code := range statuses {
		codes = append(codes, code)
	}
	sort.Ints(codes)
	parts := make([]string, 0, len(codes))
	for _, code := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", code, statuses[code]))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Printf("CONNECTLOAD requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d statuses=%s errors=%d connections=%d first_error=%q\n",
		len(all), elapsed.Seconds(), float64(len(all))/elapsed.Seconds(), pct(0.50), pct(0.90), pct(0.99), pct(1.0),
		non2xx, strings.Join(parts, ","), errs, opened, firstError)
}
