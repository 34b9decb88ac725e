package cuda

import (
	"fmt"

	"github.com/kdnative/kdnative/runtime"
)

// Priority is the CUDA backend's rank for --device auto: above the CPU's 0.
const Priority = 10

func init() {
	runtime.Register("cuda", Priority, open)
}

// open is the backend factory. Until the kernels land it never succeeds: it
// reports the loader's or the driver's error, or, with a GPU present, what it
// found and that the backend is not there yet.
func open() (runtime.Backend, error) {
	version, devs, err := Probe()
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("CUDA backend not implemented yet (%s): use --device cpu", summary(version, devs))
}
