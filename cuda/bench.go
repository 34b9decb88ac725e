package cuda

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"text/tabwriter"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// KernelBench is one measured op: its time per call and the rate it
// achieved, as a fraction of the machine's measured ceiling for that kind of
// work (memory bandwidth for memory-bound ops, bf16 matrix throughput for
// compute-bound ones).
type KernelBench struct {
	Op       string
	Shape    string
	Seconds  float64 // per call
	Rate     float64 // GB/s or TFLOP/s
	Unit     string  // "GB/s" or "TFLOP/s"
	Fraction float64 // Rate / the ceiling of Unit
}

// Ceilings are the machine's measured peaks: a large device-to-device copy
// (read + write bytes per second) and a large bf16 matrix product.
type Ceilings struct {
	CopyGBs, BF16TFLOPs float64
}

// timeIt runs f once to warm up, then reps times between two events, and
// returns the seconds per call.
func (b *Backend) timeIt(reps int, f func()) (float64, error) {
	f()
	if err := b.Sync(); err != nil {
		return 0, err
	}
	var start, end uintptr
	release := b.enter()
	destroy := func() {
		if start != 0 {
			b.api.cuEventDestroy(start)
		}
		if end != 0 {
			b.api.cuEventDestroy(end)
		}
	}
	err := b.api.check("cuEventCreate", b.api.cuEventCreate(&start, 0))
	if err == nil {
		err = b.api.check("cuEventCreate", b.api.cuEventCreate(&end, 0))
	}
	if err == nil {
		err = b.api.check("cuEventRecord", b.api.cuEventRecord(start, b.stream))
	}
	if err != nil {
		destroy()
		release()
		return 0, err
	}
	release()
	for range reps {
		f()
	}
	release = b.enter()
	defer release()
	defer destroy()
	if err := b.api.check("cuEventRecord", b.api.cuEventRecord(end, b.stream)); err != nil {
		return 0, err
	}
	if err := b.api.check("cuEventSynchronize", b.api.cuEventSynchronize(end)); err != nil {
		return 0, err
	}
	if b.err != nil {
		err := b.err
		b.err = nil
		return 0, err
	}
	var ms float32
	if err := b.api.check("cuEventElapsedTime", b.api.cuEventElapsedTime(&ms, start, end)); err != nil {
		return 0, err
	}
	return float64(ms) / 1e3 / float64(reps), nil
}

// benchSet allocates the benchmark's tensors and frees them at the end.
type benchSet struct {
	b   *Backend
	r   *rand.Rand
	all []*kdrt.Tensor
	err error
}

func (s *benchSet) rand(name string, dt kdrt.DType, scale float32, shape ...int) *kdrt.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := s.b.Alloc(name, dt, shape...)
	if err != nil {
		s.err = err
		return nil
	}
	s.all = append(s.all, t)
	if scale != 0 {
		vals := make([]float32, t.Numel())
		for i := range vals {
			vals[i] = scale * (2*s.r.Float32() - 1)
		}
		s.err = s.b.Upload(t, vals)
	}
	return t
}

func (s *benchSet) ints(name string, n, below int) *kdrt.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := s.b.Alloc(name, kdrt.I32, n)
	if err != nil {
		s.err = err
		return nil
	}
	s.all = append(s.all, t)
	vals := make([]int32, n)
	for i := range vals {
		vals[i] = int32(s.r.IntN(below))
	}
	s.err = s.b.UploadInt32(t, vals)
	return t
}

func (s *benchSet) free() {
	for _, t := range s.all {
		s.b.Free(t)
	}
}

// MeasureCeilings measures the copy bandwidth (1 GiB device to device) and
// the bf16 GEMM throughput (8192³ with fp32 accumulation).
func (b *Backend) MeasureCeilings() (Ceilings, error) {
	var c Ceilings
	s := &benchSet{b: b, r: rand.New(rand.NewPCG(1, 1))}
	defer s.free()
	const n = 1 << 28 // floats: 1 GiB
	src, dst := s.rand("copy.src", kdrt.F32, 0, n), s.rand("copy.dst", kdrt.F32, 0, n)
	if s.err != nil {
		return c, s.err
	}
	sec, err := b.timeIt(10, func() { b.Copy(dst, src) })
	if err != nil {
		return c, err
	}
	c.CopyGBs = 2 * float64(n*4) / sec / 1e9
	const m = 8192
	a, bb, cc := s.rand("gemm.a", kdrt.BF16, 1, m, m), s.rand("gemm.b", kdrt.BF16, 1, m, m), s.rand("gemm.c", kdrt.BF16, 0, m, m)
	if s.err != nil {
		return c, s.err
	}
	sec, err = b.timeIt(10, func() { b.MatMul(cc, a, bb, false, true, 1, 0) })
	if err != nil {
		return c, err
	}
	c.BF16TFLOPs = 2 * float64(m) * m * m / sec / 1e12
	return c, nil
}

// BenchShape is the size of the kernel benchmark: a batch of Tokens
// positions of a model of width Hidden, FFN width FFN, NH query and NKV
// key/value heads of HeadDim, sequence length T and vocabulary Vocab.
type BenchShape struct {
	Tokens, T, Hidden, FFN, NH, NKV, HeadDim, Vocab int
	// AttnT and AttnHD are the sequence lengths and head sizes at which
	// BF16 attention (the tensor-core kernels at 64–128) is measured, each
	// pair over max(1, Tokens/T) sequences of NH/NKV heads; nil: T and
	// HeadDim.
	AttnT, AttnHD []int
}

// Qwen05B is the shape of a Qwen2.5-0.5B training step of 4 × 1024 tokens,
// with attention also measured at 4096 positions and head size 128.
var Qwen05B = BenchShape{Tokens: 4096, T: 1024, Hidden: 896, FFN: 4864, NH: 14, NKV: 2, HeadDim: 64, Vocab: 151936,
	AttnT: []int{1024, 4096}, AttnHD: []int{64, 128}}

// BenchKernels times each op at shape sh in F32 (the dtype training uses
// today) and, for the products and attention, BF16, and reports each
// against the ceilings.
func (b *Backend) BenchKernels(sh BenchShape, ceil Ceilings) ([]KernelBench, error) {
	s := &benchSet{b: b, r: rand.New(rand.NewPCG(2, 2))}
	defer s.free()
	N, C, F, V := sh.Tokens, sh.Hidden, sh.FFN, sh.Vocab
	rows := 1024 // loss ops run on a chunk of rows, as the fused losses do
	var out []KernelBench
	add := func(op, shape string, reps int, work float64, unit string, f func()) error {
		if s.err != nil {
			return s.err
		}
		sec, err := b.timeIt(reps, f)
		if err != nil {
			return fmt.Errorf("bench %s: %w", op, err)
		}
		kb := KernelBench{Op: op, Shape: shape, Seconds: sec, Unit: unit}
		switch unit {
		case "GB/s":
			kb.Rate = work / sec / 1e9
			if ceil.CopyGBs > 0 {
				kb.Fraction = kb.Rate / ceil.CopyGBs
			}
		case "TFLOP/s":
			kb.Rate = work / sec / 1e12
			if ceil.BF16TFLOPs > 0 {
				kb.Fraction = kb.Rate / ceil.BF16TFLOPs
			}
		}
		out = append(out, kb)
		return nil
	}
	f4 := func(n int) float64 { return 4 * float64(n) }
	nc := fmt.Sprintf("[%d %d]", N, C)

	// Products: the FFN's up projection, in F32 and BF16.
	for _, dt := range []kdrt.DType{kdrt.F32, kdrt.BF16} {
		x, w, y := s.rand("x", dt, 1, N, C), s.rand("w", dt, 0.05, F, C), s.rand("y", dt, 0, N, F)
		if err := add("matmul "+dt.String(), fmt.Sprintf("[%d %d]·[%d %d]ᵀ", N, C, F, C), 5, 2*float64(N)*float64(C)*float64(F), "TFLOP/s",
			func() { b.MatMul(y, x, w, false, true, 1, 0) }); err != nil {
			return out, err
		}
	}
	x, y, dx, dy := s.rand("x", kdrt.F32, 1, N, C), s.rand("y", kdrt.F32, 0, N, C), s.rand("dx", kdrt.F32, 0, N, C), s.rand("dy", kdrt.F32, 1, N, C)
	w, dw := s.rand("w", kdrt.F32, 1, C), s.rand("dw", kdrt.F32, 0, C)
	rstd := s.rand("rstd", kdrt.F32, 0, N)
	if err := add("add", nc, 20, 3*f4(N*C), "GB/s", func() { b.Add(y, x, dy) }); err != nil {
		return out, err
	}
	if err := add("rmsnorm", nc, 20, 2*f4(N*C), "GB/s", func() { b.RMSNorm(y, rstd, x, w, 1e-6) }); err != nil {
		return out, err
	}
	if err := add("rmsnorm backward", nc, 20, 4*f4(N*C), "GB/s", func() { b.RMSNormBackward(dx, dw, dy, x, w, rstd) }); err != nil {
		return out, err
	}
	x2 := s.rand("x2", kdrt.F32, 1, N, C)
	if err := add("add + rmsnorm (fused)", nc, 20, 4*f4(N*C), "GB/s", func() { b.AddRMSNorm(dx, y, rstd, x, x2, w, 1e-6) }); err != nil {
		return out, err
	}
	g, u, h := s.rand("gate", kdrt.F32, 1, N, F), s.rand("up", kdrt.F32, 1, N, F), s.rand("h", kdrt.F32, 0, N, F)
	dg, du := s.rand("dgate", kdrt.F32, 0, N, F), s.rand("dup", kdrt.F32, 0, N, F)
	nf := fmt.Sprintf("[%d %d]", N, F)
	if err := add("swiglu", nf, 20, 3*f4(N*F), "GB/s", func() { b.SwiGLU(h, g, u) }); err != nil {
		return out, err
	}
	if err := add("swiglu backward", nf, 20, 7*f4(N*F), "GB/s", func() { b.SwiGLUBackward(dg, du, h, g, u) }); err != nil {
		return out, err
	}
	q := s.rand("q", kdrt.F32, 1, N, sh.NH*sh.HeadDim)
	pos := s.ints("pos", N, sh.T)
	inv := s.rand("invfreq", kdrt.F32, 0.5, sh.HeadDim/2)
	if err := add("rope", fmt.Sprintf("[%d %d]", N, sh.NH*sh.HeadDim), 20, 2*f4(N*sh.NH*sh.HeadDim), "GB/s", func() { b.RoPE(q, pos, inv) }); err != nil {
		return out, err
	}
	qw, kvw := sh.NH*sh.HeadDim, sh.NKV*sh.HeadDim
	qkv, kq, vq := s.rand("qkv", kdrt.F32, 1, N, qw+2*kvw), s.rand("k", kdrt.F32, 1, N, kvw), s.rand("v", kdrt.F32, 1, N, kvw)
	bqkv := s.rand("bqkv", kdrt.F32, 1, qw+2*kvw)
	qkvShape := fmt.Sprintf("[%d %d+%d+%d]", N, qw, kvw, kvw)
	if err := add("q/k/v split + bias + rope (fused)", qkvShape, 20, 2*f4(N*(qw+2*kvw)), "GB/s", func() { b.QKVBiasRoPE(q, kq, vq, qkv, bqkv, pos, inv) }); err != nil {
		return out, err
	}
	if err := add("q/k/v split + bias + rope backward (fused)", qkvShape, 20, 2*f4(N*(qw+2*kvw)), "GB/s", func() { b.QKVBiasRoPEBackward(qkv, bqkv, q, kq, vq, pos, inv) }); err != nil {
		return out, err
	}
	table := s.rand("table", kdrt.F32, 1, V, C)
	ids := s.ints("ids", N, V)
	if err := add("embedding", nc, 20, 2*f4(N*C), "GB/s", func() { b.Embedding(x, ids, table) }); err != nil {
		return out, err
	}
	// Attention of one layer: B sequences of T, F32 at the model's shape,
	// then BF16 at each AttnT × AttnHD. FLOPs count the causal half of the
	// four (forward) and ten (backward: 2.5×) T×T×HD products per head, as
	// FlashAttention's papers do.
	attn := func(dt kdrt.DType, T, hd int) error {
		B := max(1, N/T)
		nkv := sh.NKV
		qa, ka, va := s.rand("q", dt, 1, B, T, sh.NH, hd), s.rand("k", dt, 1, B, T, nkv, hd), s.rand("v", dt, 1, B, T, nkv, hd)
		oa, lse := s.rand("att", dt, 0, B, T, sh.NH, hd), s.rand("lse", kdrt.F32, 0, B, sh.NH, T)
		doa := s.rand("datt", dt, 1, B, T, sh.NH, hd)
		dqa, dka, dva := s.rand("dq", dt, 0, B, T, sh.NH, hd), s.rand("dk", dt, 0, B, T, nkv, hd), s.rand("dv", dt, 0, B, T, nkv, hd)
		ap := kdrt.AttentionParams{B: B, T: T, NH: sh.NH, NKV: nkv, HD: hd, Scale: float32(1 / math.Sqrt(float64(hd)))}
		flops := 4 * float64(B) * float64(sh.NH) * float64(T) * float64(T) * float64(hd) / 2
		shape := fmt.Sprintf("B%d T%d H%d/%d D%d", B, T, sh.NH, nkv, hd)
		if err := add("attention "+dt.String(), shape, 3, flops, "TFLOP/s", func() { b.Attention(oa, lse, qa, ka, va, ap) }); err != nil {
			return err
		}
		return add("attention backward "+dt.String(), shape, 3, 2.5*flops, "TFLOP/s", func() { b.AttentionBackward(dqa, dka, dva, doa, oa, lse, qa, ka, va, ap) })
	}
	if err := attn(kdrt.F32, sh.T, sh.HeadDim); err != nil {
		return out, err
	}
	ts, hds := sh.AttnT, sh.AttnHD
	if ts == nil {
		ts = []int{sh.T}
	}
	if hds == nil {
		hds = []int{sh.HeadDim}
	}
	for _, T := range ts {
		for _, hd := range hds {
			if err := attn(kdrt.BF16, T, hd); err != nil {
				return out, err
			}
		}
	}
	// Losses on one chunk of rows of the full vocabulary.
	logits, teacher := s.rand("logits", kdrt.F32, 3, rows, V), s.rand("teacher", kdrt.F32, 3, rows, V)
	dlogits, losses := s.rand("dlogits", kdrt.F32, 0, rows, V), s.rand("losses", kdrt.F32, 0, rows)
	weights := s.rand("weights", kdrt.F32, 0, rows)
	targets := s.ints("targets", rows, V)
	if s.err == nil {
		ones := make([]float32, rows)
		for i := range ones {
			ones[i] = 1
		}
		s.err = b.Upload(weights, ones)
	}
	rv := fmt.Sprintf("[%d %d]", rows, V)
	if err := add("cross-entropy", rv, 10, f4(rows*V), "GB/s", func() { b.CrossEntropy(losses, logits, targets) }); err != nil {
		return out, err
	}
	if err := add("cross-entropy backward", rv, 10, 3*f4(rows*V), "GB/s", func() { b.CrossEntropyBackward(dlogits, logits, targets, nil, 1) }); err != nil {
		return out, err
	}
	dp := kdrt.DivergenceParams{Kind: kdrt.ForwardKL, Temperature: 1}
	if err := add("forward KL + grad (dense)", rv, 10, 4*f4(rows*V), "GB/s", func() { b.Divergence(losses, dlogits, logits, teacher, weights, dp) }); err != nil {
		return out, err
	}
	const K = 32
	tids := s.ints("topk.ids", rows*K, V)
	tlp := s.rand("topk.logprobs", kdrt.F32, 0, rows, K)
	if tids != nil {
		tids.Shape = []int{rows, K}
	}
	if s.err == nil {
		lp := make([]float32, rows*K)
		for i := range lp {
			lp[i] = -3 - float32(i%K)*0.1 // a valid, decreasing top-k with mass < 1
		}
		s.err = b.Upload(tlp, lp)
	}
	tail := s.rand("topk.tail", kdrt.F32, 0, rows)
	if s.err == nil {
		tl := make([]float32, rows)
		for i := range tl {
			tl[i] = 0.5
		}
		s.err = b.Upload(tail, tl)
	}
	sp := kdrt.DivergenceParams{Kind: kdrt.ForwardKL, Temperature: 1, Tail: kdrt.TailBucket}
	if err := add("forward KL + grad (top-32, tail)", rv, 10, 3*f4(rows*V), "GB/s", func() { b.SparseDivergence(losses, dlogits, logits, tids, tlp, tail, weights, sp) }); err != nil {
		return out, err
	}
	// AdamW over one FFN matrix.
	pw, pg, pm, pv := s.rand("p", kdrt.F32, 1, F, C), s.rand("g", kdrt.F32, 1, F, C), s.rand("m", kdrt.F32, 0, F, C), s.rand("v", kdrt.F32, 0, F, C)
	hp := kdrt.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: 1}
	if err := add("adamw", fmt.Sprintf("[%d %d]", F, C), 20, 7*f4(F*C), "GB/s", func() { b.AdamW(pw, pg, pm, pv, hp) }); err != nil {
		return out, err
	}
	return out, s.err
}

// WriteKernelTable prints the benchmark as a table.
func WriteKernelTable(w io.Writer, dev DeviceInfo, ceil Ceilings, rows []KernelBench) error {
	fmt.Fprintf(w, "%s: copy ceiling %.0f GB/s, bf16 GEMM ceiling %.1f TFLOP/s\n", dev, ceil.CopyGBs, ceil.BF16TFLOPs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "op\tshape\ttime\trate\tof ceiling\t\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.3f ms\t%.1f %s\t%.0f%%\t\n", r.Op, r.Shape, r.Seconds*1e3, r.Rate, r.Unit, 100*r.Fraction)
	}
	return tw.Flush()
}
