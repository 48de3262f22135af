package sensor

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// Hook modes a sensor can load in, best first.
const (
	ModeTPBTF = "tp_btf" // BTF-typed tracepoints (5.5+)
	ModeRawTP = "raw_tp" // raw tracepoints, for kernels that refuse tp_btf
)

// OpenBest is the start-up every tracepoint sensor shares: it checks that
// the kernel has BPF ring buffers, lifts the memlock limit older kernels
// apply to maps, then opens the sensor in tp_btf mode and, if the kernel
// refuses that (or forceRawTP is set), in raw_tp mode. name prefixes the
// errors; the error wraps ebpf.ErrNotSupported when root was refused both.
func OpenBest[S any](name string, forceRawTP bool, open func(mode string) (S, error)) (S, error) {
	var zero S
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return zero, fmt.Errorf("%s: ring buffer: %w", name, err)
	}
	// Before 5.11 locked memory limits BPF maps; later kernels ignore it.
	if err := rlimit.RemoveMemlock(); err != nil {
		return zero, fmt.Errorf("%s: memlock rlimit: %w", name, err)
	}
	var errBTF error
	if !forceRawTP {
		s, err := open(ModeTPBTF)
		if err == nil {
			return s, nil
		}
		errBTF = err
	}
	s, err := open(ModeRawTP)
	if err == nil {
		return s, nil
	}
	if errBTF != nil {
		err = fmt.Errorf("%w (after tp_btf: %v)", err, errBTF)
	}
	if errors.Is(err, os.ErrPermission) && os.Geteuid() == 0 {
		// Root and still refused: the kernel (lockdown, LSM) forbids it.
		return zero, fmt.Errorf("%s: kernel refused both modes: %w: %w", name, ebpf.ErrNotSupported, err)
	}
	return zero, fmt.Errorf("%s: %w", name, err)
}

// SumDrops adds up a sensor's per-CPU drop counters (a per-CPU array with
// one u64 per hook, indexed like hooks) into dst by hook name. A counter
// that cannot be read is left as it is in dst.
func SumDrops(m *ebpf.Map, hooks []string, dst map[string]uint64) {
	if m == nil {
		return
	}
	var per []uint64
	for i, name := range hooks {
		if err := m.Lookup(uint32(i), &per); err != nil {
			continue
		}
		var sum uint64
		for _, c := range per {
			sum += c
		}
		dst[name] = sum
	}
}

// Teardown is the shutdown every ring-buffer sensor shares: detach the
// programs, close the reader (which makes a running Run return), wait for
// Run to leave the reader (runMu), then free the maps. name prefixes the
// error.
func Teardown(name string, links []link.Link, rd *ringbuf.Reader, runMu *sync.Mutex, freeMaps func()) error {
	var errs []error
	for _, l := range links {
		errs = append(errs, l.Close())
	}
	if rd != nil {
		errs = append(errs, rd.Close())
	}
	runMu.Lock()
	freeMaps()
	runMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: close: %w", name, err)
	}
	return nil
}
