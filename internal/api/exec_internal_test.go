package api

import (
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
