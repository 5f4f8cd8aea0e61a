package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// ErrNoOpenat2 means the kernel (or a seccomp profile) does not offer
// openat2(2), Linux 5.6+: files a container controls are then not opened at
// all, since every other way of opening them follows links it can plant.
var ErrNoOpenat2 = errors.New("openat2 is not available (Linux 5.6+ needed): refusing to open files a container controls without it")

// resolveBeneath keeps a path's resolution inside the directory it starts
// from: no "..", absolute path, symbolic link (in any element), magic link
// or mount point leads out.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Beneath is a directory whose contents someone else controls (a
// container's overlay upper directory), opened so that nothing in it leads
// out. Every file and directory beneath it is opened with openat2(2)
// relative to the root's descriptor and resolved under resolveBeneath, so a
// symbolic link in any element of the path — planted beforehand, or swapped
// in for a directory while a walk runs — makes the open fail instead of
// being followed. Entries are stat'ed relative to their directory's
// descriptor. There is no fallback that follows links: without openat2,
// OpenBeneath fails with ErrNoOpenat2.
type Beneath struct {
	fd   int
	name string
}

// OpenBeneath opens dir. Links in dir's own path are followed (the agent
// reaches the host's file system through /proc/<pid>/root): dir is a path
// riposte chose, what is beneath it is not.
func OpenBeneath(dir string) (*Beneath, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	b := &Beneath{fd: fd, name: dir}
	probe, err := b.open(".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.Close(probe)
	return b, nil
}

// Close releases the root's descriptor.
func (b *Beneath) Close() error { return unix.Close(b.fd) }

// open opens rel (slash-separated, relative to the root) beneath the root.
func (b *Beneath) open(rel string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolveBeneath}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(b.fd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			return -1, ErrNoOpenat2
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 3:
			// A rename or mount elsewhere raced the resolution; try again.
			continue
		case errors.Is(err, unix.ELOOP):
			return -1, &fs.PathError{Op: "open", Path: rel, Err: fmt.Errorf("a symbolic link on the path, not followed: %w", err)}
		case errors.Is(err, unix.EXDEV):
			return -1, &fs.PathError{Op: "open", Path: rel, Err: fmt.Errorf("the path leaves the directory or crosses a mount, not followed: %w", err)}
		}
		return -1, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
}

// OpenFile opens the regular file rel beneath the root for reading and
// returns it with its size; anything else (a link, a FIFO, a device, a
// directory) is refused. O_NONBLOCK keeps a FIFO swapped in from blocking
// the open.
func (b *Beneath) OpenFile(rel string) (*os.File, int64, error) {
	fd, err := b.open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, &fs.PathError{Op: "stat", Path: rel, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, 0, &fs.PathError{Op: "open", Path: rel, Err: errors.New("not a regular file")}
	}
	return os.NewFile(uintptr(fd), path.Join(b.name, rel)), st.Size, nil
}

// WalkFunc is called by Walk for each entry beneath the root: rel is its
// slash-separated path relative to the root, st what fstatat(2) (no link
// followed) says of it. It is called a second time for a directory whose
// entries could not be read, with err set. Returning fs.SkipDir for a
// directory skips what it holds; fs.SkipAll ends the walk.
type WalkFunc func(rel string, st *unix.Stat_t, err error) error

// walkBatch is how many names Walk reads from a directory at once: a
// directory of millions of entries is read in bounded pieces.
const walkBatch = 256

// Walk calls fn for every entry beneath the root, directories before what
// they hold, each directory's entries in the order the file system lists
// them. It keeps no more than the directories it has yet to read (fn bounds
// their number by what it accepts) and checks ctx before every entry,
// returning ctx.Err() once ctx is done.
func (b *Beneath) Walk(ctx context.Context, fn WalkFunc) error {
	pending := []string{"."}
	for len(pending) > 0 {
		dir := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		subdirs, err := b.walkDir(ctx, dir, fn)
		switch {
		case errors.Is(err, fs.SkipAll):
			return nil
		case err != nil:
			return err
		}
		// Pushed in reverse, so the first listed is read first.
		for i := len(subdirs) - 1; i >= 0; i-- {
			pending = append(pending, subdirs[i])
		}
	}
	return nil
}

// walkDir lists one directory and returns the subdirectories fn accepted.
func (b *Beneath) walkDir(ctx context.Context, dir string, fn WalkFunc) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := b.open(dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if dir == "." || errors.Is(err, ErrNoOpenat2) {
			return nil, err
		}
		return nil, skipDir(fn(dir, nil, err))
	}
	f := os.NewFile(uintptr(fd), path.Join(b.name, dir))
	defer f.Close()
	var subdirs []string
	for {
		names, err := f.Readdirnames(walkBatch)
		for _, name := range names {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rel := name
			if dir != "." {
				rel = dir + "/" + name
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // removed since it was listed
				}
				if err := skipDir(fn(rel, nil, &fs.PathError{Op: "stat", Path: rel, Err: err})); err != nil {
					return nil, err
				}
				continue
			}
			switch err := fn(rel, &st, nil); {
			case errors.Is(err, fs.SkipDir):
			case err != nil:
				return nil, err
			case st.Mode&unix.S_IFMT == unix.S_IFDIR:
				subdirs = append(subdirs, rel)
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return subdirs, nil
		}
		if err != nil {
			return subdirs, skipDir(fn(dir, nil, &fs.PathError{Op: "readdir", Path: dir, Err: err}))
		}
	}
}

// skipDir turns fs.SkipDir (meaningless for a directory that could not be
// read) into nil.
func skipDir(err error) error {
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}
