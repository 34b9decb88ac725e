package cuda

import (
	"fmt"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// TestAddRMSNorm: the fused residual add and RMSNorm against the CPU, over
// the norm shapes (rows that the 16-byte vectors cover, C a multiple of 8,
// and rows they do not), and with the sum written over its first input as
// the generator's decode step does.
func TestAddRMSNorm(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range normShapes {
			t.Run(normName(dt, s), func(t *testing.T) {
				p.t = t
				N, C := s[0], s[1]
				ac, ag := p.rand("a", dt, 2, N, C)
				bc, bg := p.rand("b", dt, 2, N, C)
				wc, wg := p.rand("w", dt, 1, C)
				// Garbage in the outputs: the op overwrites them.
				sc, sg := p.rand("sum", dt, 3, N, C)
				oc, og := p.rand("out", dt, 3, N, C)
				rc, rg := p.rand("rstd", kdrt.F32, 3, N)
				p.cpu.AddRMSNorm(sc, oc, rc, ac, bc, wc, 1e-6)
				p.gpu.AddRMSNorm(sg, og, rg, ag, bg, wg, 1e-6)
				p.check("sum", sc, sg, tolFor(dt))
				// BF16: the GPU's statistics are of the rounded sum it stored
				// (what the backward reads), the CPU's of the fp32 one.
				p.check("rstd", rc, rg, tolFor(dt))
				p.check("out", oc, og, tolFor(dt))
				// In place: a = a + b.
				p.gpu.AddRMSNorm(ag, og, rg, ag, bg, wg, 1e-6)
				p.check("sum in place", sc, ag, tolFor(dt))
				p.check("out in place", oc, og, tolFor(dt))
			})
		}
	}
}

// qkvCases are q/k/v shapes: N rows, NH query and NKV key/value heads of HD
// (Qwen2.5-0.5B's 14/2 × 64 among them), with and without biases and RoPE.
var qkvCases = []struct {
	N, NH, NKV, HD int
	bias, rope     bool
}{
	{1, 2, 1, 2, true, true},
	{37, 4, 2, 16, true, true},
	{300, 14, 2, 64, true, true},
	{37, 4, 2, 16, false, true},
	{37, 6, 2, 8, true, false},
	{5, 3, 3, 6, false, false},
	{2000, 2, 1, 32, true, true},
}

// TestQKVBiasRoPE: the fused q/k/v projection's epilogue (split, bias,
// RoPE of q and k) and its backward (the inverse rotation gathered into
// dqkv, the bias gradient from it) against the CPU.
func TestQKVBiasRoPE(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range qkvCases {
			t.Run(fmt.Sprintf("%s/N%d_NH%d_NKV%d_HD%d_bias%v_rope%v", dt, c.N, c.NH, c.NKV, c.HD, c.bias, c.rope), func(t *testing.T) {
				p.t = t
				qw, kvw := c.NH*c.HD, c.NKV*c.HD
				W := qw + 2*kvw
				var pc, pg, fc, fg *kdrt.Tensor
				if c.rope {
					pos := make([]int32, c.N)
					for i := range pos {
						pos[i] = int32(p.rng.IntN(4096))
					}
					pc, pg = p.ints("pos", pos, c.N)
					fc, fg = p.from("invFreq", kdrt.F32, ropeInvFreqs(c.HD, 1e6), c.HD/2)
				}
				xc, xg := p.rand("qkv", dt, 1, c.N, W)
				// Garbage in the outputs: the op overwrites them.
				qc, qg := p.rand("q", dt, 3, c.N, qw)
				kc, kg := p.rand("k", dt, 3, c.N, kvw)
				vc, vg := p.rand("v", dt, 3, c.N, kvw)
				var bc, bg *kdrt.Tensor
				if c.bias {
					bc, bg = p.rand("bias", dt, 1, W)
				}
				p.cpu.QKVBiasRoPE(qc, kc, vc, xc, bc, pc, fc)
				p.gpu.QKVBiasRoPE(qg, kg, vg, xg, bg, pg, fg)
				p.check("q", qc, qg, tolFor(dt))
				p.check("k", kc, kg, tolFor(dt))
				p.check("v", vc, vg, tolFor(dt))
				p.check("qkv unchanged", xc, xg, 0)

				dqc, dqg := p.rand("dq", dt, 1, c.N, qw)
				dkc, dkg := p.rand("dk", dt, 1, c.N, kvw)
				dvc, dvg := p.rand("dv", dt, 1, c.N, kvw)
				dxc, dxg := p.rand("dqkv", dt, 3, c.N, W)
				var dbc, dbg *kdrt.Tensor
				if c.bias {
					// Random gradients first: the bias gradient accumulates.
					dbc, dbg = p.rand("dbias", dt, 1, W)
				}
				p.cpu.QKVBiasRoPEBackward(dxc, dbc, dqc, dkc, dvc, pc, fc)
				p.gpu.QKVBiasRoPEBackward(dxg, dbg, dqg, dkg, dvg, pg, fg)
				p.check("dqkv", dxc, dxg, tolFor(dt))
				p.check("dq unchanged", dqc, dqg, 0)
				if c.bias {
					// bf16: each column sums N rounded rows.
					p.check("dbias", dbc, dbg, tolFor(dt)*max(1, float64(c.N)/500))
				}
			})
		}
	}
}

// TestElementwiseUnaligned: the 16-byte vector paths of Add, SwiGLU and its
// backward, and AddRMSNorm fall back to scalar code on tensors that start
// off a 16-byte boundary (views one element in), with the same results.
func TestElementwiseUnaligned(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			p.t = t
			const n, C = 1001, 40
			view := func(name string, scale float32) (c, g *kdrt.Tensor) {
				c, g = p.rand(name, dt, scale, n+1)
				return p.cpu.Slice(c, 1, n+1), p.gpu.Slice(g, 1, n+1)
			}
			ac, ag := view("a", 1)
			bc, bg := view("b", 1)
			oc, og := view("out", 3)
			p.cpu.Add(oc, ac, bc)
			p.gpu.Add(og, ag, bg)
			p.check("add", oc, og, tolFor(dt))
			p.cpu.SwiGLU(oc, ac, bc)
			p.gpu.SwiGLU(og, ag, bg)
			p.check("swiglu", oc, og, tolFor(dt))
			dgc, dgg := view("dgate", 3)
			p.cpu.SwiGLUBackward(dgc, oc, ac, bc, ac)
			p.gpu.SwiGLUBackward(dgg, og, ag, bg, ag)
			p.check("swiglu backward dgate", dgc, dgg, tolFor(dt))
			p.check("swiglu backward dup", oc, og, tolFor(dt))

			rows := func(t *kdrt.Tensor) *kdrt.Tensor { // [25, 40] of the first 1000 elements
				return &kdrt.Tensor{Shape: []int{25, C}, DType: t.DType, Storage: t.Storage, Name: t.Name}
			}
			wc, wg := p.rand("w", dt, 1, C)
			rc, rg := p.rand("rstd", kdrt.F32, 1, 25)
			p.cpu.AddRMSNorm(rows(oc), rows(dgc), rc, rows(ac), rows(bc), wc, 1e-6)
			p.gpu.AddRMSNorm(rows(og), rows(dgg), rg, rows(ag), rows(bg), wg, 1e-6)
			p.check("add rmsnorm", dgc, dgg, tolFor(dt))
		})
	}
}
