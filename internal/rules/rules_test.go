package rules

import (
	"strings"
	"testing"
)

func TestValidTemplateName(t *testing.T) {
	for _, ok := range []string{"minimal", "base", "debian-12", "a", "snap.1_x", strings.Repeat("a", 63)} {
		if !ValidTemplateName(ok) {
			t.Errorf("ValidTemplateName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", ".hidden", "-x", "Upper", "a/b", "..", "a b", strings.Repeat("a", 64)} {
		if ValidTemplateName(bad) {
			t.Errorf("ValidTemplateName(%q) = true", bad)
		}
	}
}

func TestValidEnvName(t *testing.T) {
	for _, ok := range []string{"PATH", "_x", "A1"} {
		if !ValidEnvName(ok) {
			t.Errorf("ValidEnvName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "1A", "A-B", "A=B", "A B"} {
		if ValidEnvName(bad) {
			t.Errorf("ValidEnvName(%q) = true", bad)
		}
	}
}

func TestValidCapsuleID(t *testing.T) {
	if !ValidCapsuleID("0b4ce1a3-5f1d-4c1e-9d8e-2f6a1b3c4d5e") {
		t.Error("canonical UUID refused")
	}
	for _, bad := range []string{"", "0B4CE1A3-5F1D-4C1E-9D8E-2F6A1B3C4D5E", "{0b4ce1a3-5f1d-4c1e-9d8e-2f6a1b3c4d5e}", "0b4ce1a35f1d4c1e9d8e2f6a1b3c4d5e", "../etc"} {
		if ValidCapsuleID(bad) {
			t.Errorf("ValidCapsuleID(%q) = true", bad)
		}
	}
}
