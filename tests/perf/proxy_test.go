package perf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// latencyProxy makes a loopback MinIO look like a distant S3: it accepts TCP
// connections, dials the upstream for each, and pumps bytes both ways,
// delivering every chunk it reads `delay` after it read it (a 10 ms delay
// gives a 20 ms round trip). It works below TLS, so certificates, SigV4
// signatures and HTTP pass through untouched and every client (the SDK, the
// mounts, s3fs, rclone) sees the same network.
//
// Each direction has a reader goroutine, which timestamps chunks as they
// arrive, and a writer goroutine, which sleeps until each chunk is due and
// writes it: order is preserved, and there is no bandwidth limit beyond the
// queue between them (queueChunks chunks, i.e. 16-64 MiB in flight per
// direction and connection: a 10 ms delay still allows over 1.6 GB/s per
// connection), which plays the part of TCP's window.
//
// A new connection also costs one round trip before its first byte goes
// upstream, as TCP's handshake would over a real network (the loopback
// handshake with the proxy itself is free): otherwise a client that opens
// a connection per request would look cheaper than it is.
type latencyProxy struct {
	ln       net.Listener
	upstream string
	delay    time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

const (
	proxyBufSize = 64 << 10
	queueChunks  = 1024
)

var proxyBufs = sync.Pool{New: func() any { b := make([]byte, proxyBufSize); return &b }}

// newLatencyProxy listens on listen (e.g. "127.0.0.1:0") and serves until
// Close.
func newLatencyProxy(listen, upstream string, delay time.Duration) (*latencyProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("perf: proxy: %w", err)
	}
	p := &latencyProxy{ln: ln, upstream: upstream, delay: delay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listening address, host:port.
func (p *latencyProxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for the
// goroutines to end.
func (p *latencyProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c for Close; false if the proxy is closing.
func (p *latencyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *latencyProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *latencyProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or the like: a moment later the
			// clients still want their connections.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *latencyProxy) handle(client net.Conn) {
	defer p.wg.Done()
	accepted := time.Now()
	if !p.track(client) {
		client.Close()
		return
	}
	defer p.untrack(client)
	up, err := net.DialTimeout("tcp", p.upstream, 30*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(up) {
		client.Close()
		up.Close()
		return
	}
	defer p.untrack(up)
	var once sync.Once
	kill := func() { once.Do(func() { client.Close(); up.Close() }) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(up, client, accepted.Add(2*p.delay), kill) }()
	go func() { defer wg.Done(); p.pipe(client, up, time.Time{}, kill) }()
	wg.Wait()
	kill()
}

// chunk is what one Read returned; buf == nil is the end of the stream.
type chunk struct {
	buf *[]byte
	n   int
	due time.Time
}

// pipe copies src to dst, each chunk delay after it was read (and not
// before notBefore+delay). At the end of src it half-closes dst, at the
// same delay, so a FIN travels like data. A failed write breaks the
// connection (kill), as a broken network path would.
func (p *latencyProxy) pipe(dst, src net.Conn, notBefore time.Time, kill func()) {
	q := make(chan chunk, queueChunks)
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		failed := false
		for c := range q {
			if failed {
				if c.buf != nil {
					proxyBufs.Put(c.buf)
				}
				continue // drain, so the reader never blocks on a full queue
			}
			if wait := time.Until(c.due); wait > 0 {
				timer.Reset(wait)
				<-timer.C
			}
			if c.buf == nil {
				if tc, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = tc.CloseWrite()
				}
				continue
			}
			_, err := dst.Write((*c.buf)[:c.n])
			proxyBufs.Put(c.buf)
			if err != nil {
				failed = true
				kill()
			}
		}
	}()
	for {
		buf := proxyBufs.Get().(*[]byte)
		n, err := src.Read(*buf)
		at := time.Now()
		if at.Before(notBefore) {
			at = notBefore
		}
		if n > 0 {
			q <- chunk{buf: buf, n: n, due: at.Add(p.delay)}
		} else {
			proxyBufs.Put(buf)
		}
		if err != nil {
			// EOF or a closed/reset connection: pass the end on, after
			// what is already queued.
			q <- chunk{due: at.Add(p.delay)}
			break
		}
	}
	close(q)
	<-done
}

// ---- the proxy as a process of its own ----

// The benchmarks run the proxy in a child process (this test binary,
// re-executed with proxyEnv set), not in the test process: the SDK
// baselines run in the test process, and their client-CPU-s and their
// garbage collector must not include the proxy's copying of every byte.

const proxyEnv = "S3CRYPTFS_PERF_PROXY" // "upstream host:port,delay"

// runProxyChild serves a proxy for the parent: it prints the listening
// address on stdout and serves until stdin is closed (the parent ends it,
// or died).
func runProxyChild(spec string) int {
	upstream, ds, ok := strings.Cut(spec, ",")
	delay, err := time.ParseDuration(ds)
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "perf proxy: bad %s=%q\n", proxyEnv, spec)
		return 2
	}
	p, err := newLatencyProxy("127.0.0.1:0", upstream, delay)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", p.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	p.Close()
	return 0
}

// proxyProc is a running proxy child.
type proxyProc struct {
	addr     string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	stopOnce sync.Once
}

// startProxyProc starts a proxy child in front of upstream.
func startProxyProc(upstream string, delay time.Duration, logPath string) (*proxyProc, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), proxyEnv+"="+upstream+","+delay.String())
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: starting proxy: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("perf: proxy did not start (%q, %v); log %s:\n%s", line, err, logPath, tailFile(logPath))
	}
	pp := &proxyProc{addr: addr, cmd: cmd, stdin: stdin}
	proxies.Lock()
	proxies.list = append(proxies.list, pp)
	proxies.Unlock()
	return pp, nil
}

// stop ends the child: closing its stdin makes it close its connections
// and exit; it is killed if it has not within 10 s.
func (pp *proxyProc) stop() {
	pp.stopOnce.Do(func() {
		pp.stdin.Close()
		done := make(chan struct{})
		go func() { _ = pp.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = pp.cmd.Process.Kill()
			<-done
		}
	})
}

var proxies struct {
	sync.Mutex
	list []*proxyProc
}

// stopProxies ends every proxy child (TestMain, at exit).
func stopProxies() {
	proxies.Lock()
	list := proxies.list
	proxies.list = nil
	proxies.Unlock()
	for _, pp := range list {
		pp.stop()
	}
}
