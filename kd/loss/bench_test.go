package loss_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// rssBytes reads a field (VmRSS, VmHWM) of /proc/self/status in bytes.
func rssBytes(field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field+":") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// resetPeak returns freed memory to the OS and resets VmHWM to the current
// RSS (Linux: writing 5 to clear_refs), so a later VmHWM is this call's peak.
func resetPeak() float64 {
	goruntime.GC()
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	return rssBytes("VmRSS")
}

// benchSize is the shape (Qwen2.5-0.5B's vocabulary and width, 4,096
// tokens); KDNATIVE_BENCH_TOKENS overrides the token count for a quicker run.
func benchSize() (N, C, V int) {
	N, C, V = 4096, 896, 151936
	if s := os.Getenv("KDNATIVE_BENCH_TOKENS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			N = n
		}
	}
	return
}

// BenchmarkKDFusedVsPlain measures the forward-KL KD loss with its backward
// (gradient to the hidden states and the lm_head) against an online teacher,
// fused and chunked under the default memory budget versus plain (one chunk:
// every [N × V] logit of student, gradient and teacher in memory). It reports
// the peak resident memory the call added and the time. Run it alone:
//
//	go test -run '^$' -bench KDFusedVsPlain -benchtime 1x ./kd/loss/
func BenchmarkKDFusedVsPlain(b *testing.B) {
	N, C, V := benchSize()
	for _, variant := range []struct {
		name string
		opt  loss.Options
	}{{"fused", loss.Options{}}, {"plain", loss.Options{ChunkRows: N}}} {
		b.Run(fmt.Sprintf("%s/N=%d,C=%d,V=%d", variant.name, N, C, V), func(b *testing.B) {
			be := cpu.New()
			r := rand.New(rand.NewPCG(1, 1))
			fill := func(name string, std float64, shape ...int) *kdrt.Tensor {
				t, err := be.Alloc(name, kdrt.F32, shape...)
				if err != nil {
					b.Fatal(err)
				}
				v := cpu.Float32s(t)
				for i := range v {
					v[i] = float32(r.NormFloat64() * std)
				}
				return t
			}
			hidden, th := fill("h", 1, N, C), fill("th", 1, N, C)
			head := loss.Head{W: fill("w", 0.03, V, C), G: fill("gw", 0, V, C)}
			teacher := loss.TeacherHidden{Hidden: th, Head: fill("tw", 0.03, V, C)}
			dHidden := fill("dh", 0, N, C)
			cfg := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1}
			var peak float64
			for b.Loop() {
				base := resetPeak()
				if _, err := loss.KD(be, hidden, head, dHidden, teacher, nil, cfg, 1, variant.opt); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, rssBytes("VmHWM")-base)
			}
			b.ReportMetric(peak/1e6, "peak-MB")
			b.ReportMetric(float64(N)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
