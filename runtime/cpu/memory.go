package cpu

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// memInfoPath is where Linux reports memory; a variable so tests can point
// it at a file of their own.
var memInfoPath = "/proc/meminfo"

// checkAllocAbove is the allocation size from which Alloc compares with the
// free memory first: reading /proc/meminfo costs tens of microseconds, which
// small and frequent allocations should not pay.
const checkAllocAbove = 64 << 20

// maxAllocBytes bounds one allocation where the free memory is unknown: Go
// cannot make a slice beyond its address space (2⁴⁸ bytes on amd64) and
// panics trying.
const maxAllocBytes = 1 << 46

// FreeMemory implements runtime.MemoryReporter: MemAvailable and MemTotal of
// /proc/meminfo (the memory the kernel can give without swapping); ok is
// false where there is no such file.
func (*Backend) FreeMemory() (free, total int64, ok bool) {
	data, err := os.ReadFile(memInfoPath)
	if err != nil {
		return 0, 0, false
	}
	free, total = -1, -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// "MemAvailable:   23201212 kB"
		f := bytes.Fields(sc.Bytes())
		if len(f) != 3 || string(f[2]) != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil || kb < 0 || kb > 1<<53 {
			continue
		}
		switch string(f[0]) {
		case "MemAvailable:":
			free = kb << 10
		case "MemTotal:":
			total = kb << 10
		}
	}
	if free < 0 || total < 0 {
		return 0, 0, false
	}
	return free, total, true
}

// checkAlloc refuses a tensor whose size overflows, or that is larger than
// the memory the system has available, before Go's make would panic or the
// kernel kill the process.
func (b *Backend) checkAlloc(name string, dt kdrt.DType, shape []int) error {
	n, err := kdrt.TensorBytes(dt, shape...)
	if err != nil {
		return fmt.Errorf("cpu: alloc %s: %w", name, err)
	}
	if n < checkAllocAbove {
		return nil
	}
	free, total, ok := b.FreeMemory()
	if !ok {
		if n > maxAllocBytes {
			return fmt.Errorf("cpu: alloc %s%s: %s is more than this process can address", name, kdrt.ShapeString(shape), kdrt.FormatBytes(n))
		}
		return nil
	}
	if n > free {
		return fmt.Errorf("cpu: alloc %s%s: %w", name, kdrt.ShapeString(shape),
			&kdrt.OutOfMemoryError{What: "the tensor", Need: n, Free: free, Total: total, Backend: "cpu"})
	}
	return nil
}
