package firecracker

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/go-openapi/strfmt"
)

// fakeEnv makes the test binary act as the fake Firecracker (TestMain).
const fakeEnv = "WRENN_TEST_FAKE_FIRECRACKER"

// fakeFirecracker stands in for the firecracker binary where no VM can run
// (this machine's /dev/kvm has no VMX/SVM). It is a process of its own with
// an API socket, serving the calls the driver makes with the SDK's models
// and checking what Firecracker checks: bodies that validate, files named
// relative to its working directory that exist, a tap that exists in its
// network namespace, calls in an order Firecracker accepts (configuration
// before InstanceStart, snapshots only of a paused VM, snapshot/load only on
// a fresh process). It boots nothing: there is no guest.
func fakeFirecracker(args []string) error {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "", "")
	id := fs.String("id", "", "")
	_ = fs.String("level", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	vm := &fakeVM{id: *id, state: models.InstanceInfoStateNotStarted}
	return http.Serve(ln, vm)
}

// fakeVM is the fake's state, what a snapshot holds.
type fakeVM struct {
	mu      sync.Mutex
	id      string
	state   string
	Machine *models.MachineConfiguration `json:"machine"`
	Boot    *models.BootSource           `json:"boot"`
	Drives  map[string]models.Drive      `json:"drives"`
	Net     *models.NetworkInterface     `json:"net"`
}

func (vm *fakeVM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	err := vm.handle(w, r)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(models.Error{FaultMessage: err.Error()})
	}
}

type validator interface{ Validate(strfmt.Registry) error }

// decode reads a body into v and validates it with the SDK's models.
func decode(r *http.Request, v validator) error {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return err
	}
	return v.Validate(strfmt.Default)
}

func exists(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file", path)
	}
	return nil
}

func (vm *fakeVM) handle(w http.ResponseWriter, r *http.Request) error {
	fresh := vm.state == models.InstanceInfoStateNotStarted
	route := r.Method + " " + r.URL.Path
	switch {
	case route == "GET /":
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(models.InstanceInfo{ID: &vm.id, State: &vm.state, AppName: ptr("Firecracker"), VmmVersion: ptr("fake")})
	case route == "PUT /machine-config" && fresh:
		vm.Machine = &models.MachineConfiguration{}
		if err := decode(r, vm.Machine); err != nil {
			return err
		}
	case route == "PUT /boot-source" && fresh:
		vm.Boot = &models.BootSource{}
		if err := decode(r, vm.Boot); err != nil {
			return err
		}
		if err := exists(*vm.Boot.KernelImagePath); err != nil {
			return err
		}
	case strings.HasPrefix(route, "PUT /drives/") && fresh:
		var d models.Drive
		if err := decode(r, &d); err != nil {
			return err
		}
		if err := exists(*d.PathOnHost); err != nil {
			return err
		}
		if vm.Drives == nil {
			vm.Drives = map[string]models.Drive{}
		}
		vm.Drives[*d.DriveID] = d
	case strings.HasPrefix(route, "PUT /network-interfaces/") && fresh:
		vm.Net = &models.NetworkInterface{}
		if err := decode(r, vm.Net); err != nil {
			return err
		}
		// Firecracker opens the tap by name in its own namespace.
		if _, err := net.InterfaceByName(*vm.Net.HostDevName); err != nil {
			return fmt.Errorf("opening tap %s: %w", *vm.Net.HostDevName, err)
		}
	case route == "PUT /actions" && fresh:
		var a models.InstanceActionInfo
		if err := decode(r, &a); err != nil {
			return err
		}
		if vm.Machine == nil || vm.Boot == nil || len(vm.Drives) == 0 {
			return errors.New("InstanceStart before machine-config, boot-source and a drive")
		}
		vm.state = models.InstanceInfoStateRunning
	case route == "PATCH /vm" && !fresh:
		var s models.VM
		if err := decode(r, &s); err != nil {
			return err
		}
		if *s.State == models.VMStatePaused {
			vm.state = models.InstanceInfoStatePaused
		} else {
			vm.state = models.InstanceInfoStateRunning
		}
	case route == "PUT /snapshot/create" && vm.state == models.InstanceInfoStatePaused:
		var p models.SnapshotCreateParams
		if err := decode(r, &p); err != nil {
			return err
		}
		b, err := json.Marshal(vm)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*p.SnapshotPath, b, 0o600); err != nil {
			return err
		}
		// Guest memory: a sparse file of the VM's size.
		f, err := os.Create(*p.MemFilePath)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if err := f.Truncate(*vm.Machine.MemSizeMib << 20); err != nil {
			return err
		}
	case route == "PUT /snapshot/load" && fresh && vm.Machine == nil:
		var p models.SnapshotLoadParams
		if err := decode(r, &p); err != nil {
			return err
		}
		if err := exists(*p.MemFilePath); err != nil {
			return err
		}
		b, err := os.ReadFile(*p.SnapshotPath)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, vm); err != nil {
			return err
		}
		// The saved drives and tap are opened again, by the saved names.
		for _, d := range vm.Drives {
			if err := exists(*d.PathOnHost); err != nil {
				return err
			}
		}
		if vm.Net != nil {
			if _, err := net.InterfaceByName(*vm.Net.HostDevName); err != nil {
				return fmt.Errorf("opening tap %s: %w", *vm.Net.HostDevName, err)
			}
		}
		vm.state = models.InstanceInfoStatePaused
		if p.ResumeVM {
			vm.state = models.InstanceInfoStateRunning
		}
	default:
		return fmt.Errorf("%s not allowed in state %q", route, vm.state)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
