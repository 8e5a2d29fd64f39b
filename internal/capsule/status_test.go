package capsule

import (
	"testing"

	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

func TestProtoRoundTrip(t *testing.T) {
	for _, s := range []Status{Running, Paused, Stopped, Starting, Pausing, Resuming} {
		p := ToProto(s)
		if p == hostagentv1.CapsuleStatus_CAPSULE_STATUS_UNSPECIFIED {
			t.Errorf("ToProto(%s) is unspecified", s)
		}
		if got := StatusOf(&hostagentv1.Capsule{State: p}); got != s {
			t.Errorf("StatusOf(ToProto(%s)) = %s", s, got)
		}
	}
	// An older agent sends only the string.
	if got := StatusOf(&hostagentv1.Capsule{Status: "paused"}); got != Paused {
		t.Errorf("StatusOf of a string-only capsule = %q, want paused", got)
	}
	if got := ToProto(Pending); got != hostagentv1.CapsuleStatus_CAPSULE_STATUS_UNSPECIFIED {
		t.Errorf("ToProto(pending) = %v, want unspecified (agents never report it)", got)
	}
}
