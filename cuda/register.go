package cuda

import (
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Priority is the CUDA backend's rank for --device auto: above the CPU's 0.
const Priority = 10

func init() {
	kdrt.Register("cuda", Priority, open)
}

// open is the backend factory: the process's one CUDA backend, or why there
// is none (a missing library, no GPU, a driver too old, a kernel that does
// not compile).
func open() (kdrt.Backend, error) {
	b, err := Open()
	if err != nil {
		return nil, err
	}
	return b, nil
}

var _ kdrt.Backend = (*Backend)(nil)
