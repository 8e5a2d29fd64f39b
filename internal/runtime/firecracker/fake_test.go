package firecracker

import (
	"bytes"
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

// fakeEnv makes the test binary act as the fake Firecracker (TestMain);
// fakeVersionEnv is the release it says it is (default fakeDefaultVersion).
const (
	fakeEnv            = "WRENN_TEST_FAKE_FIRECRACKER"
	fakeVersionEnv     = "WRENN_TEST_FAKE_FIRECRACKER_VERSION"
	fakeDefaultVersion = "1.13.1"
)

// fakePage is the fake guest's page size. Its memory is two pages of
// content (the rest of mem_size_mib is zeros): page 0 written at boot, page
// 1 written by the guest after each load, so a diff snapshot has exactly
// one dirty page.
const fakePage = 4096

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
	showVersion := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	release := os.Getenv(fakeVersionEnv)
	if release == "" {
		release = fakeDefaultVersion
	}
	if *showVersion {
		fmt.Printf("Firecracker v%s\n\n", release)
		return nil
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	vm := &fakeVM{id: *id, state: models.InstanceInfoStateNotStarted, release: release}
	return http.Serve(ln, vm)
}

// fakeVM is the fake's state, what a snapshot holds.
type fakeVM struct {
	mu      sync.Mutex
	id      string
	state   string
	release string
	// tracking: dirty page tracking is on (machine-config or load).
	tracking bool
	// memory is the guest's two pages of content.
	memory  [2][]byte
	Machine *models.MachineConfiguration `json:"machine"`
	Boot    *models.BootSource           `json:"boot"`
	Drives  map[string]models.Drive      `json:"drives"`
	Net     *models.NetworkInterface     `json:"net"`
	// Loads counts the loads this state has been through; LastSnapshot is
	// the type of the snapshot that saved it.
	Loads        int    `json:"loads"`
	LastSnapshot string `json:"last_snapshot"`
}

// fakeLoadParams is snapshot/load's body as Firecracker has it; which of
// the dirty-tracking fields a release knows is checked in handle.
type fakeLoadParams struct {
	SnapshotPath *string `json:"snapshot_path"`
	MemFilePath  *string `json:"mem_file_path"`
	MemBackend   *struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	} `json:"mem_backend"`
	ResumeVM            bool  `json:"resume_vm"`
	EnableDiffSnapshots bool  `json:"enable_diff_snapshots"`
	TrackDirtyPages     *bool `json:"track_dirty_pages"`
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
		vm.tracking = vm.Machine.TrackDirtyPages
		vm.memory[0] = []byte("booted " + vm.id)
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
		if p.SnapshotType == models.SnapshotCreateParamsSnapshotTypeDiff && !vm.tracking {
			return errors.New("diff snapshots are not allowed on uVMs with dirty page tracking disabled")
		}
		vm.LastSnapshot = p.SnapshotType
		b, err := json.Marshal(vm)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*p.SnapshotPath, b, 0o600); err != nil {
			return err
		}
		if err := vm.writeMemory(*p.MemFilePath, p.SnapshotType == models.SnapshotCreateParamsSnapshotTypeDiff); err != nil {
			return err
		}
	case route == "PUT /snapshot/load" && fresh && vm.Machine == nil:
		var p fakeLoadParams
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields() // as Firecracker's API does
		if err := dec.Decode(&p); err != nil {
			return err
		}
		if p.TrackDirtyPages != nil && !atLeast(vm.release, 1, 13) {
			return fmt.Errorf("unknown field `track_dirty_pages` (Firecracker %s)", vm.release)
		}
		if p.SnapshotPath == nil || (p.MemFilePath == nil) == (p.MemBackend == nil) {
			return errors.New("snapshot_path and exactly one of mem_file_path and mem_backend are required")
		}
		mem := ""
		if p.MemFilePath != nil {
			mem = *p.MemFilePath
		} else if p.MemBackend.BackendType != "File" {
			return fmt.Errorf("backend_type %q: the fake serves File", p.MemBackend.BackendType)
		} else {
			mem = p.MemBackend.BackendPath
		}
		b, err := os.ReadFile(*p.SnapshotPath)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, vm); err != nil {
			return err
		}
		if err := vm.readMemory(mem); err != nil {
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
		vm.tracking = p.EnableDiffSnapshots || (p.TrackDirtyPages != nil && *p.TrackDirtyPages)
		vm.Loads++
		// Once running, the guest changes page 1 (the one dirty page).
		vm.memory[1] = fmt.Appendf(nil, "dirtied after load %d", vm.Loads)
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

// writeMemory saves the guest's memory into path as Firecracker does: the
// file opened without truncating, emptied only when its size is not the
// guest's, then every page (full) or only the dirty one (diff) written at
// its offset. A diff onto the file the VM was loaded from thus makes it the
// whole memory again; a diff anywhere else lacks the unchanged pages.
func (vm *fakeVM) writeMemory(path string, diff bool) error {
	size := *vm.Machine.MemSizeMib << 20
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() != size {
		if err := f.Truncate(0); err != nil {
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	first := 0
	if diff {
		first = 1
	}
	for i := first; i < len(vm.memory); i++ {
		page := make([]byte, fakePage)
		copy(page, vm.memory[i])
		if _, err := f.WriteAt(page, int64(i*fakePage)); err != nil {
			return err
		}
	}
	return f.Sync()
}

// readMemory loads the guest's pages from path, which must be a memory
// file of the saved guest's size.
func (vm *fakeVM) readMemory(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != *vm.Machine.MemSizeMib<<20 {
		return fmt.Errorf("memory file %s is %d bytes, not the guest's %d MiB", path, st.Size(), *vm.Machine.MemSizeMib)
	}
	b := make([]byte, len(vm.memory)*fakePage)
	if _, err := f.ReadAt(b, 0); err != nil {
		return err
	}
	for i := range vm.memory {
		vm.memory[i] = bytes.TrimRight(b[i*fakePage:(i+1)*fakePage], "\x00")
	}
	return nil
}

// atLeast reports whether release ("1.13.1") is major.minor or later.
func atLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}
