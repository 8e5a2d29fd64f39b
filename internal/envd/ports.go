package envd

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/envd/files"
)

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// handlePorts serves GET /ports: the TCP ports something in the capsule
// listens on, read from /proc/net/tcp and /proc/net/tcp6, envd's own
// included (the caller decides what to show).
func (s *Server) handlePorts() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ports, err := listeningPorts("/proc/net/tcp", "/proc/net/tcp6")
		if err != nil {
			s.log.Error("reading listening ports", "err", err)
			files.WriteError(w, http.StatusInternalServerError, "internal", "reading listening ports failed")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(envdclient.Ports{Ports: ports})
	})
}

// listeningPorts reads the listening sockets of the tables at paths (a
// missing table, such as tcp6 without IPv6, is skipped) and returns one
// entry per port, in port order, with every address it listens on.
func listeningPorts(paths ...string) ([]envdclient.Port, error) {
	byPort := map[int]*envdclient.Port{}
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		err = parseTCPTable(f, func(addr string, port int) {
			e := byPort[port]
			if e == nil {
				e = &envdclient.Port{Port: port}
				byPort[port] = e
			}
			if !slices.Contains(e.Addresses, addr) {
				e.Addresses = append(e.Addresses, addr)
			}
		})
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
	}
	out := make([]envdclient.Port, 0, len(byPort))
	for _, e := range byPort {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b envdclient.Port) int { return a.Port - b.Port })
	return out, nil
}

// parseTCPTable calls found for every listening socket of a
// /proc/net/tcp{,6} table: "sl local_address rem_address st ...", where an
// address is the hex of the IP (in host byte order, by 32-bit words) and
// port.
func parseTCPTable(r io.Reader, found func(addr string, port int)) error {
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpListen {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || port == 0 {
			continue
		}
		raw, err := hex.DecodeString(hexIP)
		if err != nil || (len(raw) != 4 && len(raw) != 16) {
			continue
		}
		// Each 32-bit word is in the kernel's (little-endian) order.
		ip := make(net.IP, len(raw))
		for i := 0; i < len(raw); i += 4 {
			ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
		}
		found(ip.String(), int(port))
	}
	return sc.Err()
}
