package sysinit

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"/proc":         "/proc",
		`/mnt/a\040b`:   "/mnt/a b",
		`/x\134y`:       `/x\y`,
		`/bad\04`:       `/bad\04`,
		`/not\999octal`: `/not\999octal`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsMountPoint(t *testing.T) {
	if ok, err := isMountPoint("/proc"); err != nil || !ok {
		t.Errorf("isMountPoint(/proc) = %v, %v; want true", ok, err)
	}
	if ok, err := isMountPoint("/proc/self"); err != nil || ok {
		t.Errorf("isMountPoint(/proc/self) = %v, %v; want false", ok, err)
	}
}
