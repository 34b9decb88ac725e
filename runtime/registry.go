package runtime

import (
	"fmt"
	"sort"
	"sync"
)

// Factory opens a backend, or says why it cannot (a missing library, no device).
type Factory func() (Backend, error)

type registered struct {
	name     string
	priority int
	open     Factory
}

var (
	regMu    sync.Mutex
	registry []registered
)

// Register makes a backend available to Open under name. For --device auto the
// usable backend with the highest priority wins (CUDA above CPU). Backends
// register from init functions in their own packages, so that the model and the
// objectives never import them.
func Register(name string, priority int, open Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	for _, r := range registry {
		if r.name == name {
			panic("runtime: backend registered twice: " + name)
		}
	}
	registry = append(registry, registered{name, priority, open})
	sort.SliceStable(registry, func(i, j int) bool { return registry[i].priority > registry[j].priority })
}

// Names lists the registered backends, highest priority first.
func Names() []string {
	regMu.Lock()
	defer regMu.Unlock()
	var out []string
	for _, r := range registry {
		out = append(out, r.name)
	}
	return out
}

// Status is what Probe found for one backend.
type Status struct {
	Name     string
	Usable   bool
	Describe string // the backend's Describe() when usable
	Err      error  // why not, when not usable
}

// Probe opens every registered backend once and reports which are usable and
// why the others are not. It is what `kdnative doctor` prints.
func Probe() []Status {
	regMu.Lock()
	regs := append([]registered(nil), registry...)
	regMu.Unlock()
	var out []Status
	for _, r := range regs {
		b, err := r.open()
		if err != nil {
			out = append(out, Status{Name: r.name, Err: err})
			continue
		}
		out = append(out, Status{Name: r.name, Usable: true, Describe: b.Describe()})
	}
	return out
}

// Open returns the backend for a --device value: "auto" picks the usable
// backend with the highest priority, any other value names a backend. With
// auto, each backend that was passed over adds one line to notes saying why
// (for example "cuda: libcuda.so.1 not found"), for the caller to print.
func Open(device string) (b Backend, notes []string, err error) {
	regMu.Lock()
	regs := append([]registered(nil), registry...)
	regMu.Unlock()
	if device == "" {
		device = "auto"
	}
	if device == "auto" {
		for _, r := range regs {
			b, err := r.open()
			if err == nil {
				return b, notes, nil
			}
			notes = append(notes, fmt.Sprintf("%s: %v", r.name, err))
		}
		return nil, notes, fmt.Errorf("no usable backend (registered: %v)", Names())
	}
	for _, r := range regs {
		if r.name == device {
			b, err := r.open()
			if err != nil {
				return nil, nil, fmt.Errorf("device %q: %w", device, err)
			}
			return b, nil, nil
		}
	}
	return nil, nil, fmt.Errorf("unknown device %q (want auto or one of %v)", device, Names())
}
