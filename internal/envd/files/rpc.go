package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	"github.com/wrenn-dev/wrenn/internal/envd/account"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
	"github.com/wrenn-dev/wrenn/proto/envd/v1/envdv1connect"
)

var _ envdv1connect.FilesystemServiceHandler = (*Service)(nil)

// Limits of ListDir and recursive Watch.
const (
	maxListDepth   = 64
	maxListEntries = 100000
	maxWatchDirs   = 10000
)

// watchTypes maps fsnotify operations to event types, in the order a Watch
// reports them when one event has several.
var watchTypes = []struct {
	op fsnotify.Op
	t  envdv1.EventType
}{
	{fsnotify.Create, envdv1.EventType_EVENT_TYPE_CREATE},
	{fsnotify.Write, envdv1.EventType_EVENT_TYPE_WRITE},
	{fsnotify.Remove, envdv1.EventType_EVENT_TYPE_REMOVE},
	{fsnotify.Rename, envdv1.EventType_EVENT_TYPE_RENAME},
	{fsnotify.Chmod, envdv1.EventType_EVENT_TYPE_CHMOD},
}

// Stat implements FilesystemService.Stat.
func (s *Service) Stat(ctx context.Context, req *connect.Request[envdv1.StatRequest]) (*connect.Response[envdv1.StatResponse], error) {
	path, err := cleanPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, s.rpcError(err)
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := acct.Check(filepath.Dir(path), account.Execute); err != nil {
		return nil, s.rpcError(fmt.Errorf("stat: %w", err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("stat: %w", err))
	}
	var n names
	return connect.NewResponse(&envdv1.StatResponse{Entry: n.entry(path, fi)}), nil
}

// ListDir implements FilesystemService.ListDir.
func (s *Service) ListDir(ctx context.Context, req *connect.Request[envdv1.ListDirRequest]) (*connect.Response[envdv1.ListDirResponse], error) {
	path, err := cleanPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, s.rpcError(err)
	}
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	if depth > maxListDepth {
		return nil, s.rpcError(fmt.Errorf("%w: depth %d exceeds %d", ErrInvalid, depth, maxListDepth))
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return nil, s.rpcError(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("listing directory: %w", err))
	}
	if !fi.IsDir() {
		return nil, s.rpcError(fmt.Errorf("%w: %s is not a directory", ErrInvalid, path))
	}
	var n names
	var entries []*envdv1.EntryInfo
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		if err := acct.Check(dir, account.Read|account.Execute); err != nil {
			return err
		}
		des, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, de := range des {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(entries) >= maxListEntries {
				return fmt.Errorf("%w: more than %d entries", ErrState, maxListEntries)
			}
			p := filepath.Join(dir, de.Name())
			info, err := de.Info()
			if err != nil {
				continue // removed meanwhile
			}
			entries = append(entries, n.entry(p, info))
			if de.IsDir() && level < depth {
				if err := walk(p, level+1); err != nil && !errors.Is(err, fs.ErrPermission) {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(path, 1); err != nil {
		return nil, s.rpcError(fmt.Errorf("listing directory: %w", err))
	}
	return connect.NewResponse(&envdv1.ListDirResponse{Entries: entries}), nil
}

// MakeDir implements FilesystemService.MakeDir.
func (s *Service) MakeDir(ctx context.Context, req *connect.Request[envdv1.MakeDirRequest]) (*connect.Response[envdv1.MakeDirResponse], error) {
	path, err := cleanPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, s.rpcError(err)
	}
	mode := fs.FileMode(req.Msg.GetMode())
	if mode == 0 {
		mode = 0o755
	}
	if mode&^fs.ModePerm != 0 {
		return nil, s.rpcError(fmt.Errorf("%w: mode %#o", ErrInvalid, req.Msg.GetMode()))
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := acct.CheckCreate(path); err != nil {
		return nil, s.rpcError(fmt.Errorf("making directory: %w", err))
	}
	if fi, err := os.Lstat(path); err == nil {
		if !req.Msg.GetParents() || !fi.IsDir() {
			return nil, s.rpcError(fmt.Errorf("making directory: %w", &fs.PathError{Op: "mkdir", Path: path, Err: fs.ErrExist}))
		}
	} else {
		if req.Msg.GetParents() {
			if err := acct.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, s.rpcError(fmt.Errorf("making directory: %w", err))
			}
		}
		if err := os.Mkdir(path, mode); err != nil {
			return nil, s.rpcError(fmt.Errorf("making directory: %w", err))
		}
		if err := acct.Chown(path); err != nil {
			return nil, s.rpcError(err)
		}
		// Apply mode exactly, whatever envd's umask.
		if err := os.Chmod(path, mode); err != nil {
			return nil, s.rpcError(fmt.Errorf("making directory: %w", err))
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("making directory: %w", err))
	}
	var n names
	return connect.NewResponse(&envdv1.MakeDirResponse{Entry: n.entry(path, fi)}), nil
}

// Move implements FilesystemService.Move.
func (s *Service) Move(ctx context.Context, req *connect.Request[envdv1.MoveRequest]) (*connect.Response[envdv1.MoveResponse], error) {
	src, err := cleanPath("source", req.Msg.GetSource())
	if err != nil {
		return nil, s.rpcError(err)
	}
	dst, err := cleanPath("destination", req.Msg.GetDestination())
	if err != nil {
		return nil, s.rpcError(err)
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := acct.Check(filepath.Dir(src), account.Write|account.Execute); err != nil {
		return nil, s.rpcError(fmt.Errorf("moving: %w", err))
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, s.rpcError(fmt.Errorf("moving: %w", err))
	}
	if err := acct.Check(filepath.Dir(dst), account.Write|account.Execute); err != nil {
		return nil, s.rpcError(fmt.Errorf("moving: %w", err))
	}
	if err := os.Rename(src, dst); err != nil {
		return nil, s.rpcError(fmt.Errorf("moving: %w", err))
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("moving: %w", err))
	}
	var n names
	return connect.NewResponse(&envdv1.MoveResponse{Entry: n.entry(dst, fi)}), nil
}

// Remove implements FilesystemService.Remove.
func (s *Service) Remove(ctx context.Context, req *connect.Request[envdv1.RemoveRequest]) (*connect.Response[envdv1.RemoveResponse], error) {
	path, err := cleanPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if path == "/" {
		return nil, s.rpcError(fmt.Errorf("%w: refusing to remove /", ErrInvalid))
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := acct.Check(filepath.Dir(path), account.Write|account.Execute); err != nil {
		return nil, s.rpcError(fmt.Errorf("removing: %w", err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("removing: %w", err))
	}
	if req.Msg.GetRecursive() && fi.IsDir() {
		err = os.RemoveAll(path)
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		return nil, s.rpcError(fmt.Errorf("removing: %w", err))
	}
	return connect.NewResponse(&envdv1.RemoveResponse{}), nil
}

// Watch implements FilesystemService.Watch.
func (s *Service) Watch(ctx context.Context, req *connect.Request[envdv1.WatchRequest], stream *connect.ServerStream[envdv1.WatchResponse]) error {
	path, err := cleanPath("path", req.Msg.GetPath())
	if err != nil {
		return s.rpcError(err)
	}
	acct, err := s.account(req.Msg.GetUser())
	if err != nil {
		return s.rpcError(err)
	}
	if err := acct.Check(path, account.Read|account.Execute); err != nil {
		return s.rpcError(fmt.Errorf("watching: %w", err))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return s.rpcError(fmt.Errorf("watching: %w", err))
	}
	if !fi.IsDir() {
		return s.rpcError(fmt.Errorf("%w: %s is not a directory", ErrInvalid, path))
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return s.rpcError(fmt.Errorf("watching: %w", err))
	}
	defer func() { _ = w.Close() }()
	recursive := req.Msg.GetRecursive()
	dirs := 0
	addTree := func(root string) error {
		if !recursive {
			dirs++
			return w.Add(root)
		}
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil // vanished or unreadable: nothing to watch
			}
			if acct.Check(p, account.Read|account.Execute) != nil {
				return filepath.SkipDir // the user may not look inside
			}
			if dirs >= maxWatchDirs {
				return fmt.Errorf("%w: more than %d directories", ErrState, maxWatchDirs)
			}
			dirs++
			if err := w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		})
	}
	if err := addTree(path); err != nil {
		return s.rpcError(fmt.Errorf("watching: %w", err))
	}
	if err := stream.Send(&envdv1.WatchResponse{Event: &envdv1.WatchResponse_Start{Start: &envdv1.WatchStartEvent{}}}); err != nil {
		return err
	}
	keepalive := time.NewTicker(s.keepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keepalive.C:
			if err := stream.Send(&envdv1.WatchResponse{Event: &envdv1.WatchResponse_Keepalive{Keepalive: &envdv1.WatchKeepaliveEvent{}}}); err != nil {
				return err
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("watching: %w", err))
			}
			return s.rpcError(fmt.Errorf("watching: %w", err))
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if recursive && ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					if err := addTree(ev.Name); err != nil {
						return s.rpcError(fmt.Errorf("watching: %w", err))
					}
				}
			}
			for _, m := range watchTypes {
				if !ev.Has(m.op) {
					continue
				}
				err := stream.Send(&envdv1.WatchResponse{Event: &envdv1.WatchResponse_Filesystem{Filesystem: &envdv1.FilesystemEvent{Path: ev.Name, Type: m.t}}})
				if err != nil {
					return err
				}
			}
		}
	}
}
