package capsule

import (
	"github.com/wrenn-dev/wrenn/internal/egress"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// protoStatus maps the statuses an agent reports onto the RPCs' enum.
var protoStatus = map[Status]hostagentv1.CapsuleStatus{
	Running:  hostagentv1.CapsuleStatus_CAPSULE_STATUS_RUNNING,
	Paused:   hostagentv1.CapsuleStatus_CAPSULE_STATUS_PAUSED,
	Stopped:  hostagentv1.CapsuleStatus_CAPSULE_STATUS_STOPPED,
	Starting: hostagentv1.CapsuleStatus_CAPSULE_STATUS_STARTING,
	Pausing:  hostagentv1.CapsuleStatus_CAPSULE_STATUS_PAUSING,
	Resuming: hostagentv1.CapsuleStatus_CAPSULE_STATUS_RESUMING,
}

// ToProto is s as the RPCs' enum; statuses an agent never reports map to
// CAPSULE_STATUS_UNSPECIFIED.
func ToProto(s Status) hostagentv1.CapsuleStatus { return protoStatus[s] }

// StatusOf is the status an agent reported for c: its enum, or, from an
// agent older than the enum, its status string.
func StatusOf(c *hostagentv1.Capsule) Status {
	st := c.GetState()
	for s, p := range protoStatus {
		if p == st {
			return s
		}
	}
	return Status(c.GetStatus())
}

// PolicyFromProto is the egress policy p carries; nil for none (the open
// policy).
func PolicyFromProto(p *hostagentv1.NetworkPolicy) *egress.Policy {
	if p == nil {
		return nil
	}
	return &egress.Policy{Internet: p.GetInternet(), Allow: p.GetAllow(), Deny: p.GetDeny()}
}

// PolicyToProto is the wire form of p; nil for nil.
func PolicyToProto(p *egress.Policy) *hostagentv1.NetworkPolicy {
	if p == nil {
		return nil
	}
	return &hostagentv1.NetworkPolicy{Internet: p.Internet, Allow: p.Allow, Deny: p.Deny}
}
