package api

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

func TestProgramName(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"echo hello", nil, "echo"},
		{"/usr/bin/python3 -c 'print(1)'", nil, "python3"},
		{"TOKEN=s3cret API_KEY=x curl https://example.com", nil, "curl"},
		{"  ls   -la", nil, "ls"},
		{"'quoted secret' rest", nil, "sh"},
		{"$(cat /secret)", nil, "sh"},
		{"TOKEN=s3cret", nil, "sh"},
		{"python3", []string{"-c", "print('s3cret')"}, "python3"},
		{"/opt/app/bin/run-job.sh", []string{}, "run-job.sh"},
		{"s3cret=value", []string{}, "other"},
	} {
		p := processSpec{Cmd: tc.cmd, Args: tc.args}
		if got := p.program(); got != tc.want {
			t.Errorf("program of %q %q = %q, want %q", tc.cmd, tc.args, got, tc.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]string{"SIGTERM": "SIGTERM", "term": "SIGTERM", "Kill": "SIGKILL", "SIGINT": "SIGINT"} {
		sig, err := parseSignal(in)
		if err != nil || signalName(sig) != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %s", in, signalName(sig), err, want)
		}
	}
	for _, in := range []string{"", "SIG", "SIGFOO", "9", "UNSPECIFIED"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) succeeded", in)
		}
	}
}

func TestTrimPartialRune(t *testing.T) {
	s := []byte("aé€😀")
	for cut := range len(s) + 1 {
		got := trimPartialRune(s[:cut])
		if !utf8.Valid(got) || len(got) < cut-3 {
			t.Errorf("cut at %d: got %q", cut, got)
		}
	}
}

func TestJSONPrefix(t *testing.T) {
	texts := [][]byte{
		[]byte("plain ascii"), []byte("\x00\x01\x1f\x7f"), []byte(`"quoted" \ back`), []byte("<a & b>"),
		[]byte("\b\f\n\r\t"), []byte("é€😀"), []byte("\u2028\u2029"), {0xff, 0xfe, 'a', 0xc3}, {0xe2, 0x82},
	}
	// And random bytes, mostly not UTF-8.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		texts = append(texts, b)
	}
	for _, b := range texts {
		enc, err := json.Marshal(string(b))
		if err != nil {
			t.Fatal(err)
		}
		want := len(enc) - 2
		n, size := jsonPrefix(b, math.MaxInt)
		if n != len(b) || size != want {
			t.Errorf("jsonPrefix(%q) = %d, %d; want %d, %d (encoding/json: %s)", b, n, size, len(b), want, enc)
		}
		// A cut keeps whole characters within room.
		for room := range want {
			n, size := jsonPrefix(b, room)
			enc, _ := json.Marshal(string(b[:n]))
			if size > room || len(enc)-2 != size && utf8.Valid(b) {
				t.Errorf("jsonPrefix(%q, %d) = %d, %d; the prefix encodes to %d bytes", b, room, n, size, len(enc)-2)
			}
		}
	}
}
