// gvisor-http: gVisor's netstack (the user-space TCP/IP stack of gVisor's
// runsc sandbox) as finprobe's peer. It attaches to an existing TAP device,
// gives netstack its own MAC and address there, and serves a one-shot HTTP
// answer on one port, so finprobe can watch how netstack closes connections:
// after GET / it closes, after GET /shut it shuts down its sending side and
// waits for ours, after GET /hold it waits for our FIN, holds its socket in
// CLOSE_WAIT for holdTime, then closes.
//
// Usage (the common CLI of finprobe's stack recipes):
//
//	gvisor-http --tap TAP --addr PEER_ADDR --prefix PREFIX \
//		--gateway LOCAL_ADDR --port PORT [--ipv6] [--control PATH]
//
// With --control PATH it also listens on a Unix stream socket at PATH and
// answers each line "state LADDR LPORT RADDR RPORT" (a 4-tuple as netstack
// sees it) with that connection's state named as RFC 9293 does ("CLOSED"
// when netstack has none), or "error TEXT": a stack Lab's lab.peer_state.
//
// Built in GOPATH mode against Debian's golang-gvisor-gvisor-dev (2022-12),
// see build.mk; nothing is fetched from the network.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const (
	nicID = 1
	// A locally administered unicast MAC, so it can never be a real card's.
	stackMAC = "\x02\x66\x70\x00\x00\x11"
	// Requests are tiny; a peer that sends more header than this without
	// "\r\n\r\n" is not speaking our HTTP, and we stop buffering it.
	maxRequest = 64 * 1024
	response   = "HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
	// holdTime is how long a /hold connection stays open after the
	// client's FIN, in CLOSE_WAIT: long enough for a matrix batch's event,
	// its answer window and the follow-up probe (finprobe.stacks.HOLD).
	holdTime = 10 * time.Second
	// holdPoll is how soon a held connection sees that it was reset.
	holdPoll = 50 * time.Millisecond
)

// config is the parsed command line.
type config struct {
	tap     string
	addr    tcpip.Address
	prefix  int
	gateway tcpip.Address
	port    uint16
	proto   tcpip.NetworkProtocolNumber
	control string
}

// usageExit reports a command-line error the way every recipe does: exit 2.
func usageExit(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gvisor-http: "+format+"\n", args...)
	fmt.Fprintln(os.Stderr, "usage: gvisor-http --tap TAP --addr PEER_ADDR --prefix PREFIX --gateway LOCAL_ADDR --port PORT [--ipv6] [--control PATH]")
	os.Exit(2)
}

// fatal reports a runtime failure (TAP, stack setup): exit 1.
func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gvisor-http: "+format+"\n", args...)
	os.Exit(1)
}

// parseAddr turns text into netstack's address form, checking the family
// matches --ipv6 so a v4 address never slips into a v6 stack or back.
func parseAddr(name, text string, v6 bool) tcpip.Address {
	ip := net.ParseIP(text)
	if ip == nil {
		usageExit("--%s: %q is not an IP address", name, text)
	}
	if v6 {
		if ip.To4() != nil {
			usageExit("--%s: %q is IPv4 but --ipv6 was given", name, text)
		}
		return tcpip.Address(ip.To16())
	}
	if ip.To4() == nil {
		usageExit("--%s: %q is IPv6; pass --ipv6 for an IPv6 stack", name, text)
	}
	return tcpip.Address(ip.To4())
}

func parseArgs() config {
	fs := flag.NewFlagSet("gvisor-http", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	tap := fs.String("tap", "", "existing TAP device (IFF_TAP|IFF_NO_PI) to attach to")
	addr := fs.String("addr", "", "the stack's own address (PEER_ADDR)")
	prefix := fs.Int("prefix", -1, "prefix length of the link's subnet")
	gateway := fs.String("gateway", "", "finprobe's address (LOCAL_ADDR), the default route")
	port := fs.Int("port", 0, "TCP port to serve HTTP on")
	v6 := fs.Bool("ipv6", false, "the addresses are IPv6")
	control := fs.String("control", "", "Unix socket path on which to tell connection states")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2) // flag has already said what was wrong
	}
	if fs.NArg() != 0 {
		usageExit("unexpected argument %q", fs.Arg(0))
	}
	if *tap == "" || *addr == "" || *gateway == "" || *prefix == -1 || *port == 0 {
		usageExit("--tap, --addr, --prefix, --gateway and --port are required")
	}
	c := config{tap: *tap, prefix: *prefix, proto: ipv4.ProtocolNumber, control: *control}
	if *v6 {
		c.proto = ipv6.ProtocolNumber
	}
	c.addr = parseAddr("addr", *addr, *v6)
	c.gateway = parseAddr("gateway", *gateway, *v6)
	if c.prefix < 0 || c.prefix > len(c.addr)*8 {
		usageExit("--prefix: %d is not a prefix length for this family", *prefix)
	}
	if *port < 1 || *port > 65535 {
		usageExit("--port: %d is not a TCP port", *port)
	}
	c.port = uint16(*port)
	return c
}

// newStack builds netstack on the TAP: an Ethernet NIC with our MAC, the
// address, an on-link route for the subnet and a default route via
// finprobe. ARP and the IPv6 protocol's NDP answer for the address.
// ipv6.NewProtocol's zero options mean no DAD, no router solicitations and
// no MLD: the address is usable at once and the TAP carries only what the
// probe is about.
func newStack(c config) *stack.Stack {
	fd, err := tun.OpenTAP(c.tap)
	if err != nil {
		fatal("open TAP %q: %v", c.tap, err)
	}
	mtu, err := rawfile.GetMTU(c.tap)
	if err != nil {
		fatal("MTU of %q: %v", c.tap, err)
	}
	link, err := fdbased.New(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            mtu,
		EthernetHeader: true,
		Address:        tcpip.LinkAddress(stackMAC),
	})
	if err != nil {
		fatal("fdbased endpoint on %q: %v", c.tap, err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if terr := s.CreateNIC(nicID, link); terr != nil {
		fatal("create NIC: %v", terr)
	}
	own := tcpip.AddressWithPrefix{Address: c.addr, PrefixLen: c.prefix}
	if terr := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol: c.proto, AddressWithPrefix: own},
		stack.AddressProperties{}); terr != nil {
		fatal("add address %v: %v", own, terr)
	}
	anywhere := header.IPv4EmptySubnet
	if c.proto == ipv6.ProtocolNumber {
		anywhere = header.IPv6EmptySubnet
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: own.Subnet(), NIC: nicID},
		{Destination: anywhere, Gateway: c.gateway, NIC: nicID},
	})
	return s
}

// serve answers one connection: read until the end of the request header,
// answer, then end as the request's path asks: "/shut" shuts down our
// sending side (our FIN goes out) and reads until the client's FIN, "/hold"
// reads until the client's FIN and holds the socket holdTime (netstack in
// CLOSE_WAIT), any other path closes at once. EOF (the client's FIN) or an
// error before a whole request: just close.
func serve(s *stack.Stack, conn net.Conn) {
	defer conn.Close()
	req := readRequest(conn)
	if req == nil {
		return
	}
	if _, err := conn.Write([]byte(response)); err != nil {
		fmt.Fprintf(os.Stderr, "gvisor-http: %v: write: %v\n", conn.RemoteAddr(), err)
		return
	}
	switch requestPath(req) {
	case "/shut":
		if err := conn.(*gonet.TCPConn).CloseWrite(); err != nil {
			fmt.Fprintf(os.Stderr, "gvisor-http: %v: shutdown: %v\n", conn.RemoteAddr(), err)
			return
		}
		drain(conn)
	case "/hold":
		if drain(conn) {
			hold(s, conn)
		}
	}
}

// readRequest reads the request header, "\r\n\r\n" included; nil at EOF
// or an error before its end. It reads one byte at a time on purpose: bytes
// pipelined after the request then stay unread in netstack's receive queue,
// so the probe's "close with unread data" sees what netstack does with them.
func readRequest(conn net.Conn) []byte {
	var req []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(req, []byte("\r\n\r\n")) {
		if len(req) >= maxRequest {
			fmt.Fprintf(os.Stderr, "gvisor-http: %v: request header over %d bytes, closing\n",
				conn.RemoteAddr(), maxRequest)
			return nil
		}
		n, err := conn.Read(one)
		if n == 1 {
			req = append(req, one[0])
			continue
		}
		if err != nil && err != io.EOF {
			fmt.Fprintf(os.Stderr, "gvisor-http: %v: read: %v\n", conn.RemoteAddr(), err)
		}
		if err != nil {
			return nil
		}
	}
	return req
}

// requestPath is the path of a request header's first line, the text
// between its first two spaces ("GET /shut HTTP/1.0": "/shut").
func requestPath(req []byte) string {
	line := string(req[:bytes.IndexByte(req, '\r')])
	fields := strings.SplitN(line, " ", 3)
	if len(fields) < 2 {
		return ""
	}
	return fields[1]
}

// drain reads and discards until EOF (the client's FIN: true) or an error.
func drain(conn net.Conn) bool {
	_, err := io.Copy(io.Discard, conn)
	return err == nil
}

// hold keeps conn open holdTime after the client's FIN, or until netstack
// no longer has it in CLOSE_WAIT (a RST ended it). gonet tells a RST after
// EOF to no one (a Read still returns EOF: seen), so hold asks netstack's
// demuxer, as the control socket does, every holdPoll.
func hold(s *stack.Stack, conn net.Conn) {
	local, lok := conn.LocalAddr().(*net.TCPAddr)
	remote, rok := conn.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return
	}
	id, proto, err := parseTuple([]string{local.IP.String(), strconv.Itoa(local.Port),
		remote.IP.String(), strconv.Itoa(remote.Port)})
	if err != nil {
		return
	}
	for end := time.Now().Add(holdTime); time.Now().Before(end); time.Sleep(holdPoll) {
		if connState(s, id, proto) != "CLOSE_WAIT" {
			return
		}
	}
}

// rfcNames are netstack's TCP states under RFC 9293's names, as finprobe
// writes them. StateError is a connection ended by a RST or a timeout: it
// no longer exists, as CLOSED says.
var rfcNames = map[tcp.EndpointState]string{
	tcp.StateEstablished: "ESTABLISHED", tcp.StateSynSent: "SYN_SENT",
	tcp.StateSynRecv: "SYN_RECEIVED", tcp.StateFinWait1: "FIN_WAIT_1",
	tcp.StateFinWait2: "FIN_WAIT_2", tcp.StateTimeWait: "TIME_WAIT",
	tcp.StateClose: "CLOSED", tcp.StateCloseWait: "CLOSE_WAIT",
	tcp.StateLastAck: "LAST_ACK", tcp.StateListen: "LISTEN",
	tcp.StateClosing: "CLOSING", tcp.StateError: "CLOSED",
}

// parseTuple reads "LADDR LPORT RADDR RPORT" into a demuxer ID and its
// network protocol.
func parseTuple(fields []string) (stack.TransportEndpointID, tcpip.NetworkProtocolNumber, error) {
	var id stack.TransportEndpointID
	if len(fields) != 4 {
		return id, 0, fmt.Errorf("want state LADDR LPORT RADDR RPORT")
	}
	laddr, raddr := net.ParseIP(fields[0]), net.ParseIP(fields[2])
	lport, lerr := strconv.ParseUint(fields[1], 10, 16)
	rport, rerr := strconv.ParseUint(fields[3], 10, 16)
	if laddr == nil || raddr == nil || lerr != nil || rerr != nil ||
		(laddr.To4() == nil) != (raddr.To4() == nil) {
		return id, 0, fmt.Errorf("bad 4-tuple %q", strings.Join(fields, " "))
	}
	proto := tcpip.NetworkProtocolNumber(ipv6.ProtocolNumber)
	if v4 := laddr.To4(); v4 != nil {
		proto, laddr, raddr = ipv4.ProtocolNumber, v4, raddr.To4()
	}
	id = stack.TransportEndpointID{
		LocalAddress: tcpip.Address(laddr), LocalPort: uint16(lport),
		RemoteAddress: tcpip.Address(raddr), RemotePort: uint16(rport)}
	return id, proto, nil
}

// connState is netstack's state for the connection id, from its demuxer,
// which holds an accepted endpoint from the handshake until it is CLOSED
// (TIME_WAIT and LAST_ACK after our Close too). The demuxer falls back to
// a listener for an unknown 4-tuple: only an exact match counts.
func connState(s *stack.Stack, id stack.TransportEndpointID, proto tcpip.NetworkProtocolNumber) string {
	found := s.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID)
	ep, ok := found.(tcpip.Endpoint)
	if !ok {
		return "CLOSED"
	}
	info, ok := ep.Info().(*stack.TransportEndpointInfo)
	if !ok || info.ID != id {
		return "CLOSED"
	}
	state := tcp.EndpointState(ep.State())
	if name, ok := rfcNames[state]; ok {
		return name
	}
	return "error netstack state " + state.String()
}

// answer is the reply line (without its newline) to one request line.
func answer(s *stack.Stack, line string) string {
	fields := strings.Fields(line)
	if len(fields) == 0 || fields[0] != "state" {
		return "error unknown request (try: state LADDR LPORT RADDR RPORT)"
	}
	id, proto, err := parseTuple(fields[1:])
	if err != nil {
		return "error " + err.Error()
	}
	return connState(s, id, proto)
}

// controlClient answers one client's lines until it hangs up.
func controlClient(s *stack.Stack, conn net.Conn) {
	defer conn.Close()
	lines := bufio.NewScanner(conn)
	for lines.Scan() {
		if _, err := io.WriteString(conn, answer(s, lines.Text())+"\n"); err != nil {
			return
		}
	}
}

// controlListen listens at path before "ready", so the socket is there
// once the Lab is; clients are served as they come.
func controlListen(s *stack.Stack, path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fatal("control socket %q: %v", path, err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				fatal("control accept: %v", err)
			}
			go controlClient(s, conn)
		}
	}()
}

func main() {
	c := parseArgs()
	s := newStack(c)
	if c.control != "" {
		controlListen(s, c.control)
	}
	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: nicID, Addr: c.addr, Port: c.port}, c.proto)
	if err != nil {
		fatal("listen on port %d: %v", c.port, err)
	}
	// Go's stdout is unbuffered: the line is out before we accept.
	fmt.Println("ready")
	for {
		conn, err := ln.Accept()
		if err != nil {
			fatal("accept: %v", err)
		}
		go serve(s, conn)
	}
}
