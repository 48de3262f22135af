// Package hashcache computes and caches the sha256 and md5 of executables, so
// the agent can attach a content hash to every exec without re-reading the
// same binary on every exec and without stalling the event path on a huge one.
//
// The trap: a path is not a file. Between the exec and the hash, the file at
// a path can be replaced, deleted or rewritten, and hashing the path then
// attributes the wrong content to the process. The cache therefore opens the
// exact inode the process runs (/proc/PID/exe), checks its identity (device,
// inode, size, mtime, ctime) against the Key the kernel reported, and reports
// "gone" rather than a wrong hash when they disagree.
package hashcache

import (
	"container/list"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/schema"
)

// Hash statuses reported in schema.FileHash.Status.
const (
	StatusOK       = "ok"
	StatusPending  = "pending"
	StatusTooLarge = "too_large"
	StatusBusy     = "busy"
	StatusGone     = "gone"
	StatusError    = "error"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultMaxSize  = 256 << 20
	DefaultWorkers  = 2
	DefaultEntries  = 16384
	DefaultMaxQueue = 4096
)

// readBufSize is the per-worker read buffer; memory use is Workers*readBufSize.
const readBufSize = 128 << 10

// Options configures a Cache; zero fields take the defaults.
type Options struct {
	MaxSize  int64 // files larger than this are not read: status "too_large"
	Workers  int   // concurrent hashing goroutines
	Entries  int   // LRU capacity in results
	MaxQueue int   // jobs waiting for a worker; beyond it Hash returns "busy"
}

// Key identifies one version of a file: any write or replacement changes it.
type Key struct {
	Dev, Ino uint64
	Size     int64
	MtimeNs  int64
	CtimeNs  int64
}

// KeyOf returns the Key of a stat result.
func KeyOf(st *unix.Stat_t) Key {
	return Key{
		Dev:     st.Dev,
		Ino:     st.Ino,
		Size:    st.Size,
		MtimeNs: st.Mtim.Nano(),
		CtimeNs: st.Ctim.Nano(),
	}
}

// StatKey returns the Key of the file at path, following symlinks.
func StatKey(path string) (Key, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Key{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return KeyOf(&st), nil
}

// errIdentity means an opened file is not the version the caller asked for.
var errIdentity = errors.New("file identity differs from key")

type job struct {
	key    Key // what the caller asked for; results are cached under it
	opened Key // the file's identity when opened
	f      *os.File
	done   chan struct{}
	res    schema.FileHash
	late   []func(schema.FileHash) // guarded by Cache.mu until done is closed
}

type entry struct {
	key Key
	res schema.FileHash
}

// Cache hashes executables with a bounded worker pool and remembers results
// by Key. It is safe for concurrent use.
type Cache struct {
	opts Options

	mu       sync.Mutex
	lru      *list.List // of *entry, front = most recent
	byKey    map[Key]*list.Element
	inflight map[Key]*job
	queue    chan *job
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup

	hits, misses, shared, hashedBytes, tooLarge, errs, pending, gone, busy atomic.Uint64
}

// New starts a Cache and its workers; call Close to stop them.
func New(opts Options) *Cache {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Entries <= 0 {
		opts.Entries = DefaultEntries
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	c := &Cache{
		opts:     opts,
		lru:      list.New(),
		byKey:    make(map[Key]*list.Element),
		inflight: make(map[Key]*job),
		queue:    make(chan *job, opts.MaxQueue),
		stop:     make(chan struct{}),
	}
	for range opts.Workers {
		c.wg.Add(1)
		go c.worker()
	}
	return c
}

// Hash returns the sha256 and md5 of the file identified by key, executed by
// pid from path. It opens /proc/PID/exe first (the exact executed inode, even
// if deleted or replaced) and falls back to path, accepting either only when
// fstat matches key. Results are cached by key, and concurrent requests for
// one key share one hashing job. Hash waits at most wait: if the result is not
// ready by then it returns status "pending" and later calls late (from another
// goroutine) with the final result; late may be nil.
func (c *Cache) Hash(pid uint32, path string, key Key, wait time.Duration, late func(schema.FileHash)) schema.FileHash {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.errs.Add(1)
		return schema.FileHash{Size: key.Size, Status: StatusError}
	}
	if el, ok := c.byKey[key]; ok {
		c.lru.MoveToFront(el)
		res := el.Value.(*entry).res
		c.mu.Unlock()
		c.hits.Add(1)
		return res
	}
	j, shared := c.inflight[key]
	c.mu.Unlock()

	if !shared {
		c.misses.Add(1)
		if key.Size > c.opts.MaxSize {
			c.tooLarge.Add(1)
			res := schema.FileHash{Size: key.Size, Status: StatusTooLarge}
			c.store(key, res)
			return res
		}
		// Open in the caller: the process (and so /proc/PID/exe) may be
		// gone by the time a worker gets to the job, but an open file
		// pins the inode.
		f, opened, err := openVerified(pid, path, key)
		if err != nil {
			if errors.Is(err, errIdentity) || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
				c.gone.Add(1)
				return schema.FileHash{Size: key.Size, Status: StatusGone}
			}
			c.errs.Add(1)
			return schema.FileHash{Size: key.Size, Status: StatusError}
		}
		j = &job{key: key, opened: opened, f: f, done: make(chan struct{})}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			f.Close()
			c.errs.Add(1)
			return schema.FileHash{Size: key.Size, Status: StatusError}
		}
		if other, ok := c.inflight[key]; ok {
			// Lost a race with another caller for the same key: this
			// call shares that job after all, and was no extra miss.
			c.mu.Unlock()
			f.Close()
			j = other
			c.misses.Add(^uint64(0))
			c.shared.Add(1)
		} else {
			select {
			case c.queue <- j:
				c.inflight[key] = j
				c.mu.Unlock()
			default:
				c.mu.Unlock()
				f.Close()
				c.busy.Add(1)
				return schema.FileHash{Size: key.Size, Status: StatusBusy}
			}
		}
	} else {
		c.shared.Add(1)
	}

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-j.done:
			t.Stop()
			return j.res
		case <-t.C:
		}
	}
	c.mu.Lock()
	select {
	case <-j.done:
		c.mu.Unlock()
		return j.res
	default:
	}
	if late != nil {
		j.late = append(j.late, late)
	}
	c.mu.Unlock()
	c.pending.Add(1)
	return schema.FileHash{Size: key.Size, Status: StatusPending}
}

// openVerified opens the executed file, preferring /proc/PID/exe.
// It returns the file and its Key at open time.
func openVerified(pid uint32, path string, key Key) (*os.File, Key, error) {
	var firstErr error
	candidates := make([]string, 0, 2)
	if pid != 0 {
		candidates = append(candidates, "/proc/"+strconv.FormatUint(uint64(pid), 10)+"/exe")
	}
	if path != "" {
		candidates = append(candidates, path)
	}
	for i, p := range candidates {
		f, err := openRegular(p)
		if err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(int(f.Fd()), &st); err == nil {
				got := KeyOf(&st)
				if got == key || (i == 0 && pid != 0 && sameExecuted(got, key)) {
					return f, got, nil
				}
				err = fmt.Errorf("open %s: %w", p, errIdentity)
			}
			f.Close()
		}
		if firstErr == nil || errors.Is(err, errIdentity) {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("no pid or path: %w", os.ErrNotExist)
	}
	return nil, Key{}, firstErr
}

// sameExecuted compares the inode a process executes with key, ignoring
// ctime: deleting or renaming over a running binary (every package upgrade)
// bumps the ctime of the executed inode although its content is unchanged.
// A content write changes mtime, which is still compared, and a forged
// mtime needs a write, which the kernel refuses (ETXTBSY) while the file is
// executed; a change during the read is caught in hashFile.
func sameExecuted(got, key Key) bool {
	got.CtimeNs = key.CtimeNs
	return got == key
}

// openRegular opens p for reading without blocking: a FIFO or device put at
// the path must not hang the caller, and only regular files are accepted.
func openRegular(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fstat %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s: not a regular file: %w", p, errIdentity)
	}
	return os.NewFile(uintptr(fd), p), nil
}

func (c *Cache) worker() {
	defer c.wg.Done()
	buf := make([]byte, readBufSize)
	for {
		select {
		case <-c.stop:
			return
		case j := <-c.queue:
			j.res = c.hashFile(j, buf)
			c.finish(j)
		}
	}
}

func (c *Cache) hashFile(j *job, buf []byte) schema.FileHash {
	defer j.f.Close()
	sh, m5 := sha256.New(), md5.New()
	w := io.MultiWriter(sh, m5)
	var n int64
	for {
		select {
		case <-c.stop:
			c.errs.Add(1)
			return schema.FileHash{Size: j.key.Size, Status: StatusError}
		default:
		}
		k, err := j.f.Read(buf)
		if k > 0 {
			w.Write(buf[:k])
			n += int64(k)
			c.hashedBytes.Add(uint64(k))
			if n > c.opts.MaxSize {
				// Grew past the limit while we read: it changed.
				c.gone.Add(1)
				return schema.FileHash{Size: j.key.Size, Status: StatusGone}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			c.errs.Add(1)
			return schema.FileHash{Size: j.key.Size, Status: StatusError}
		}
	}
	// A write during the read changes mtime/ctime/size: report it rather
	// than a hash of mixed content.
	var st unix.Stat_t
	if err := unix.Fstat(int(j.f.Fd()), &st); err != nil || KeyOf(&st) != j.opened || n != j.key.Size {
		c.gone.Add(1)
		return schema.FileHash{Size: j.key.Size, Status: StatusGone}
	}
	return schema.FileHash{
		SHA256: hex.EncodeToString(sh.Sum(nil)),
		MD5:    hex.EncodeToString(m5.Sum(nil)),
		Size:   n,
		Status: StatusOK,
	}
}

func (c *Cache) finish(j *job) {
	c.mu.Lock()
	delete(c.inflight, j.key)
	if j.res.Status == StatusOK {
		c.storeLocked(j.key, j.res)
	}
	late := j.late
	j.late = nil
	close(j.done)
	c.mu.Unlock()
	for _, f := range late {
		f(j.res)
	}
}

func (c *Cache) store(key Key, res schema.FileHash) {
	c.mu.Lock()
	c.storeLocked(key, res)
	c.mu.Unlock()
}

func (c *Cache) storeLocked(key Key, res schema.FileHash) {
	if el, ok := c.byKey[key]; ok {
		el.Value.(*entry).res = res
		c.lru.MoveToFront(el)
		return
	}
	c.byKey[key] = c.lru.PushFront(&entry{key: key, res: res})
	for c.lru.Len() > c.opts.Entries {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byKey, old.Value.(*entry).key)
	}
}

// Stats returns counters: hits, misses, shared (joined an in-flight job),
// hashed_bytes, too_large, errors, pending, gone, busy, entries and queued.
func (c *Cache) Stats() map[string]uint64 {
	c.mu.Lock()
	entries := uint64(c.lru.Len())
	queued := uint64(len(c.inflight))
	c.mu.Unlock()
	return map[string]uint64{
		"hits":         c.hits.Load(),
		"misses":       c.misses.Load(),
		"shared":       c.shared.Load(),
		"hashed_bytes": c.hashedBytes.Load(),
		"too_large":    c.tooLarge.Load(),
		"errors":       c.errs.Load(),
		"pending":      c.pending.Load(),
		"gone":         c.gone.Load(),
		"busy":         c.busy.Load(),
		"entries":      entries,
		"queued":       queued,
	}
}

// Close stops the workers, abandoning jobs in progress: their late callbacks
// receive status "error". It is safe to call more than once.
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	c.wg.Wait()
	// Jobs still queued: nobody will run them.
	for {
		select {
		case j := <-c.queue:
			j.f.Close()
			c.errs.Add(1)
			j.res = schema.FileHash{Size: j.key.Size, Status: StatusError}
			c.finish(j)
		default:
			return
		}
	}
}
