package cpu

import (
	"math"
	goruntime "runtime"
	"sync"
)

// Float is the element type of a kernel: float32 in the backend, float64 in the
// reference tests.
type Float interface{ ~float32 | ~float64 }

// parallelFor calls fn over [0, n) split into contiguous ranges, one per
// worker, running them concurrently when the work is large enough to pay for
// the goroutines. cost is a rough count of float operations per index.
func parallelFor(n, cost int, fn func(lo, hi int)) {
	workers := goruntime.GOMAXPROCS(0)
	if workers > n {
		workers = n
	}
	// Below ~32k operations the goroutine start-up costs more than it saves.
	if workers <= 1 || n*cost < 1<<15 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, hi)
	}
	wg.Wait()
}

func exp[F Float](x F) F  { return F(math.Exp(float64(x))) }
func sqrt[F Float](x F) F { return F(math.Sqrt(float64(x))) }
func tanh[F Float](x F) F { return F(math.Tanh(float64(x))) }
