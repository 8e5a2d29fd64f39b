package gvisor

// StopDrainers stops every console drainer of d, as the agent's exit does:
// the capsules run on, their consoles no longer drained.
func (d *Driver) StopDrainers() {
	d.mu.Lock()
	ids := make([]string, 0, len(d.drainers))
	for id := range d.drainers {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	for _, id := range ids {
		d.stopDrain(id)
	}
}
