package network

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Capsule namespaces are bind mounts of nsfs files on empty files in the
// manager's own directory, Config.NetnsDir, never in /run/netns. iproute2
// bind-mounts /run/netns onto itself the first time anything on the host runs
// `ip netns add`; from then on a namespace mounted there earlier sits under
// that bind mount, where it can neither be unmounted nor its file removed by
// path. Config.NetnsDir is made a private bind mount of itself, so nothing
// another program mounts elsewhere propagates into it, and nothing mounted
// in it propagates out.
//
// Deleting copes with mount tables that are not the way they were left
// (deleteNetns); namespaces an older agent mounted in /run/netns are moved
// into Config.NetnsDir by New (migrateLegacy).

// maxStacked bounds the loops that unmount what is stacked on one path.
const maxStacked = 64

// prepareNetnsDir creates dir and makes it a private mount of itself.
// Calling it again, as every agent start does, changes nothing.
func prepareNetnsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating netns directory: %w", err)
	}
	makePrivate := func() error {
		return unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, "")
	}
	err := makePrivate()
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet.
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting netns directory %s onto itself: %w", dir, err)
		}
		err = makePrivate()
	}
	if err != nil {
		return fmt.Errorf("making netns directory %s a private mount: %w", dir, err)
	}
	return nil
}

// releaseNetnsDir undoes prepareNetnsDir: it unmounts dir's bind mount and
// removes dir, which must be empty.
func releaseNetnsDir(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing netns directory: %w", err)
	}
	return nil
}

// createNetns creates a network namespace and bind-mounts it at path, the
// way `ip netns add` does. unshare switches the calling thread, so it runs
// on a thread of its own that goes back to the original namespace before
// being handed back to the Go scheduler — or dies with its goroutine if it
// cannot, so no other goroutine ever runs in the capsule's namespace.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating netns file: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unsharing netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with this goroutine.
			errc <- errors.Join(mountErr, fmt.Errorf("restoring netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			mountErr = fmt.Errorf("bind-mounting netns: %w", mountErr)
		}
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// attachNetns bind-mounts the namespace open as fd at path, a new file.
func attachNetns(fd int, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating netns file: %w", err)
	}
	f.Close()
	src := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("bind-mounting netns: %w", err)
	}
	return nil
}

// deleteNetns unmounts and removes the namespace file at path; a missing one
// is not an error. The namespace itself lives on while a process (runsc)
// still holds it.
//
// When the file cannot be removed because its namespace is still mounted
// underneath something mounted later over its directory (another program's
// bind mount, as iproute2 makes of /run/netns), it is removed from a
// throw-away mount namespace of its own: there the covering mounts are taken
// away, the namespace is unmounted and the file unlinked, and unlinking a
// file makes the kernel detach what is mounted on it in every mount
// namespace — including the agent's, where it could not be reached. The
// covering mounts stay as they are for everyone else.
func deleteNetns(path string) error {
	if err := unmountAll(path); err != nil {
		return err
	}
	err := os.Remove(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("removing netns file: %w", err)
	}
	if err := inPrivateMountNamespace(func() error { return unlinkUncovered(path) }); err != nil {
		return fmt.Errorf("removing netns file %s from under what covers it: %w", path, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing netns file %s: still there after unlinking it from under what covers it", path)
	}
	return nil
}

// unmountAll unmounts whatever is mounted on path, however many times.
func unmountAll(path string) error {
	for range maxStacked {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmounting netns %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmounting netns %s: still mounted after %d unmounts", path, maxStacked)
}

// unlinkUncovered removes the file at path in a private mount namespace,
// taking away the mounts stacked on its directory one at a time until the
// file can be removed.
func unlinkUncovered(path string) error {
	dir := filepath.Dir(path)
	var want unix.Stat_t
	if err := unix.Stat(dir, &want); err != nil {
		return fmt.Errorf("inspecting %s: %w", dir, err)
	}
	for range maxStacked {
		if err := unmountAll(path); err != nil {
			return err
		}
		err := os.Remove(path)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		more, err := uncoverOnce(dir, want)
		if err != nil {
			return err
		}
		if !more {
			return fmt.Errorf("removing %s: %w, and nothing left to uncover", path, unix.EBUSY)
		}
	}
	return fmt.Errorf("%s still covered after %d unmounts", dir, maxStacked)
}

// uncoverOnce unmounts the topmost bind mount of dir onto itself (what `ip
// netns add` makes of /run/netns), in a private mount namespace. want is
// dir as it was first seen. It reports false when there was nothing of
// dir's left to take away: nothing mounted at dir any more, or what is left
// there is another file system.
func uncoverOnce(dir string, want unix.Stat_t) (bool, error) {
	err := unix.Unmount(dir, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("unmounting what covers %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, fmt.Errorf("inspecting %s: %w", dir, err)
	}
	return st.Dev == want.Dev && st.Ino == want.Ino, nil
}

// openNetns opens the namespace mounted at path, looking underneath what
// covers its directory when path itself shows no namespace. It returns the
// open file descriptor, or ok false when no namespace is mounted there.
func openNetns(path string) (fd int, ok bool, err error) {
	if netnsMounted(path) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, false, fmt.Errorf("opening netns %s: %w", path, err)
		}
		return fd, true, nil
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return -1, false, nil
	}
	fd = -1
	err = inPrivateMountNamespace(func() error {
		dir := filepath.Dir(path)
		var want unix.Stat_t
		if err := unix.Stat(dir, &want); err != nil {
			return fmt.Errorf("inspecting %s: %w", dir, err)
		}
		// One cover at a time: the namespace may be mounted on a layer
		// below the top one, and taking away the layer it is on would
		// take it away too.
		for range maxStacked {
			if netnsMounted(path) {
				var err error
				// File descriptors are shared by every thread of the
				// process, so this one stays usable after the thread
				// is gone.
				fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				return err
			}
			more, err := uncoverOnce(dir, want)
			if err != nil || !more {
				return err // !more: uncovered all the way down, no namespace
			}
		}
		return fmt.Errorf("%s still covered after %d unmounts", dir, maxStacked)
	})
	if err != nil {
		return -1, false, fmt.Errorf("opening netns %s from under what covers it: %w", path, err)
	}
	return fd, fd >= 0, nil
}

// runInNetns runs fn on a locked OS thread switched into namespace ns, for
// the calls that act in the calling thread's namespace (sockets, tun
// ioctls). The thread goes back to the Go scheduler only once it is back
// in its own namespace; one that cannot be switched back stays locked and
// dies with its goroutine.
func runInNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("reading the thread's netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving netns: %w", err)) // the thread stays locked
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inPrivateMountNamespace runs fn on an OS thread that has a mount
// namespace of its own in which every mount is private, so that nothing fn
// unmounts there changes the mounts anyone else sees. The thread is thrown
// away afterwards instead of going back to the Go scheduler.
func inPrivateMountNamespace(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine ends locked, so the runtime ends
		// the thread with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unsharing mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			errc <- fmt.Errorf("making mounts private: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// netnsMounted reports whether path is a mounted network namespace, not just
// the empty file a crash between create and mount leaves behind.
func netnsMounted(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}
