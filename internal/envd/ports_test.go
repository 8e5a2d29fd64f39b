package envd

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseTCPTable(t *testing.T) {
	// From a real /proc/net/tcp and tcp6: 0.0.0.0:49983 and 127.0.0.1:8080
	// listening, one established connection, [::]:8080 and [::1]:9000
	// listening.
	v4 := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:C33F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`
	v6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
`
	var got []string
	for _, table := range []string{v4, v6} {
		if err := parseTCPTable(strings.NewReader(table), func(addr string, port int) {
			got = append(got, addr+" "+strconv.Itoa(port))
		}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"0.0.0.0 49983", "127.0.0.1 8080", ":: 8080", "::1 9000"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
