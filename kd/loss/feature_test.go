package loss_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The references below compute the feature and relation losses in float64
// straight from their definitions (torch's F.mse_loss on the selected rows,
// F.cosine_similarity with eps = 1e-8, pairwise cosines one pair at a time);
// the gradients are checked against central differences of them.

// featRandn returns n standard-normal values, rounded to float32 so that the
// float64 reference and the float32 backend see the same inputs.
func featRandn(r *rand.Rand, n int, std float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(float32(r.NormFloat64() * std))
	}
	return x
}

func featTensor(t *testing.T, be kdrt.Backend, name string, x []float64, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	if x != nil {
		v := make([]float32, len(x))
		for i, f := range x {
			v[i] = float32(f)
		}
		if err := be.Upload(tt, v); err != nil {
			t.Fatal(err)
		}
	}
	return tt
}

func featHost(t *testing.T, be kdrt.Backend, x *kdrt.Tensor) []float64 {
	t.Helper()
	v := make([]float32, x.Numel())
	if err := be.Download(x, v); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, f := range v {
		out[i] = float64(f)
	}
	return out
}

func featSub(a, b []float64) []float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}

// featRelErr and featFD are internal/ref's.
var (
	featRelErr = ref.RelErr
	featFD     = func(x []float64, f func() float64) []float64 { return ref.CentralDiff(x, f, 1e-5) }
)

func featMask(mask []float32, n int) float64 {
	if mask == nil {
		return 1
	}
	return float64(mask[n])
}

// featRefLoss is the float64 feature loss: p = hs·Wᵀ + b (hs itself when w is
// nil), then the masked mean of the squared error (over rows and channels)
// or of 1 − cosine similarity.
func featRefLoss(kind string, hs, w, b, ht []float64, mask []float32, N, Cs, Ct int) float64 {
	var total float64
	var M int
	for n := range N {
		m := featMask(mask, n)
		if m == 0 {
			continue
		}
		M++
		p := make([]float64, Ct)
		for o := range Ct {
			if w == nil {
				p[o] = hs[n*Cs+o]
				continue
			}
			for i := range Cs {
				p[o] += hs[n*Cs+i] * w[o*Cs+i]
			}
			if b != nil {
				p[o] += b[o]
			}
		}
		tr := ht[n*Ct : (n+1)*Ct]
		switch kind {
		case loss.FeatureMSE:
			var s float64
			for o := range Ct {
				s += (p[o] - tr[o]) * (p[o] - tr[o])
			}
			total += m * s / float64(Ct)
		case loss.FeatureCosine:
			var pp, tt, pt float64
			for o := range Ct {
				pp += p[o] * p[o]
				tt += tr[o] * tr[o]
				pt += p[o] * tr[o]
			}
			cos := pt / (math.Max(math.Sqrt(pp), 1e-8) * math.Max(math.Sqrt(tt), 1e-8))
			total += m * (1 - cos)
		}
	}
	return total / float64(M)
}

// featRefRelation is the float64 relation loss, one pair of tokens at a time.
func featRefRelation(hs, ht []float64, B, T, Cs, Ct int, mask []float32) float64 {
	cosine := func(x []float64, C, i, j int) float64 {
		a, b := x[i*C:(i+1)*C], x[j*C:(j+1)*C]
		var aa, bb, ab float64
		for c := range C {
			aa += a[c] * a[c]
			bb += b[c] * b[c]
			ab += a[c] * b[c]
		}
		return ab / (math.Max(math.Sqrt(aa), 1e-8) * math.Max(math.Sqrt(bb), 1e-8))
	}
	var total float64
	var pairs int
	for b := range B {
		var valid []int
		for i := range T {
			if featMask(mask, b*T+i) != 0 {
				valid = append(valid, b*T+i)
			}
		}
		pairs += len(valid) * len(valid)
		for _, i := range valid {
			for _, j := range valid {
				d := cosine(hs, Cs, i, j) - cosine(ht, Ct, i, j)
				total += featMask(mask, i) * featMask(mask, j) * d * d
			}
		}
	}
	return total / float64(pairs)
}

var featMasks = map[string]func(N int) []float32{
	"nomask": func(int) []float32 { return nil },
	"binary": func(N int) []float32 {
		m := make([]float32, N)
		for i := range m {
			if i%3 != 1 {
				m[i] = 1
			}
		}
		return m
	},
	"weights": func(N int) []float32 {
		m := make([]float32, N)
		for i := range m {
			m[i] = float32(i%4) * 0.5 // 0, 0.5, 1, 1.5
		}
		return m
	},
}

func TestFeatureLossMatchesReference(t *testing.T) {
	be := cpu.New()
	const N = 7
	for _, kind := range []string{loss.FeatureMSE, loss.FeatureCosine} {
		for _, pc := range []struct {
			name       string
			Cs, Ct     int
			proj, bias bool
		}{
			{"equal-noproj", 5, 5, false, false},
			{"equal-proj", 5, 5, true, false},
			{"widen-bias", 4, 6, true, true},
			{"narrow", 6, 3, true, false},
		} {
			for mname, mk := range featMasks {
				t.Run(kind+"/"+pc.name+"/"+mname, func(t *testing.T) {
					Cs, Ct := pc.Cs, pc.Ct
					r := rand.New(rand.NewPCG(21, uint64(Cs*100+Ct)))
					mask := mk(N)
					hs, ht := featRandn(r, N*Cs, 1), featRandn(r, N*Ct, 1)
					cfg := loss.FeatureConfig{Loss: kind, Project: pc.proj && Cs == Ct, Bias: pc.bias}
					var w, bias []float64
					var proj *loss.Projection
					if pc.proj {
						var err error
						proj, err = loss.NewProjection(be, "p", Cs, Ct, pc.bias, 3)
						if err != nil {
							t.Fatal(err)
						}
						defer proj.Free(be)
						// Random weights, so that the identity start of equal
						// widths does not hide anything.
						w = featRandn(r, Ct*Cs, 1/math.Sqrt(float64(Cs)))
						be.Upload(proj.W, featTensorValues(w))
						if pc.bias {
							bias = featRandn(r, Ct, 0.5)
							be.Upload(proj.B, featTensorValues(bias))
						}
					}
					sT, tT := featTensor(t, be, "hs", hs, N, Cs), featTensor(t, be, "ht", ht, N, Ct)
					d0 := featRandn(r, N*Cs, 1) // the gradient accumulates onto this
					dT := featTensor(t, be, "dhs", d0, N, Cs)
					var g0, gb0 []float64
					if proj != nil {
						g0 = featRandn(r, Ct*Cs, 1)
						be.Upload(proj.G, featTensorValues(g0))
						if pc.bias {
							gb0 = featRandn(r, Ct, 1)
							be.Upload(proj.GB, featTensorValues(gb0))
						}
					}
					const scale = 1.7
					res, err := loss.FeatureLoss(be, sT, dT, tT, proj, mask, cfg, scale)
					if err != nil {
						t.Fatal(err)
					}
					ref := func() float64 { return scale * featRefLoss(kind, hs, w, bias, ht, mask, N, Cs, Ct) }
					want := ref()
					if math.Abs(res.Loss-want) > 1e-5*math.Abs(want) {
						t.Fatalf("loss %.9g, want %.9g", res.Loss, want)
					}
					if wantTok := map[string]int{"nomask": 7, "binary": 5, "weights": 5}[mname]; res.Tokens != wantTok {
						t.Fatalf("tokens %d, want %d", res.Tokens, wantTok)
					}
					if e := featRelErr(featSub(featHost(t, be, dT), d0), featFD(hs, ref)); e > 1e-4 {
						t.Fatalf("student gradient: relative error %.3g vs finite differences", e)
					}
					if proj != nil {
						if e := featRelErr(featSub(featHost(t, be, proj.G), g0), featFD(w, ref)); e > 1e-4 {
							t.Fatalf("projection weight gradient: relative error %.3g vs finite differences", e)
						}
						if pc.bias {
							if e := featRelErr(featSub(featHost(t, be, proj.GB), gb0), featFD(bias, ref)); e > 1e-4 {
								t.Fatalf("projection bias gradient: relative error %.3g vs finite differences", e)
							}
						}
						// Without dStudent nothing is accumulated.
						before := featHost(t, be, proj.G)
						res2, err := loss.FeatureLoss(be, sT, nil, tT, proj, mask, cfg, scale)
						if err != nil {
							t.Fatal(err)
						}
						if res2.Loss != res.Loss || featRelErr(featHost(t, be, proj.G), before) != 0 {
							t.Fatalf("evaluation (no gradient) changed the loss (%g vs %g) or the projection's gradient", res2.Loss, res.Loss)
						}
					}
				})
			}
		}
	}
}

func featTensorValues(x []float64) []float32 {
	v := make([]float32, len(x))
	for i, f := range x {
		v[i] = float32(f)
	}
	return v
}

// TestFeatureLossIdentityStart: with equal widths a fresh projection is the
// identity, so the projected loss equals the unprojected one.
func TestFeatureLossIdentityStart(t *testing.T) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(22, 22))
	N, C := 5, 8
	sT := featTensor(t, be, "hs", featRandn(r, N*C, 1), N, C)
	tT := featTensor(t, be, "ht", featRandn(r, N*C, 1), N, C)
	for _, kind := range []string{loss.FeatureMSE, loss.FeatureCosine} {
		proj, err := loss.NewProjection(be, "p", C, C, true, 1)
		if err != nil {
			t.Fatal(err)
		}
		a, err := loss.FeatureLoss(be, sT, nil, tT, nil, nil, loss.FeatureConfig{Loss: kind}, 1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := loss.FeatureLoss(be, sT, nil, tT, proj, nil, loss.FeatureConfig{Loss: kind, Project: true, Bias: true}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(a.Loss-b.Loss) > 1e-6*a.Loss {
			t.Fatalf("%s: identity projection gives %g, unprojected %g", kind, b.Loss, a.Loss)
		}
	}
}

func TestNewProjection(t *testing.T) {
	be := cpu.New()
	mk := func(in, out int, bias bool, seed uint64) *loss.Projection {
		p, err := loss.NewProjection(be, "feature.proj.4_8", in, out, bias, seed)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b, c := mk(64, 96, true, 7), mk(64, 96, true, 7), mk(64, 96, true, 8)
	wa, wb, wc := featHost(t, be, a.W), featHost(t, be, b.W), featHost(t, be, c.W)
	if featRelErr(wa, wb) != 0 {
		t.Fatal("the same seed gave different projections")
	}
	if featRelErr(wa, wc) == 0 {
		t.Fatal("different seeds gave the same projection")
	}
	var ss float64
	for _, v := range wa {
		ss += v * v
	}
	if std := math.Sqrt(ss / float64(len(wa))); math.Abs(std-1/8.0) > 0.01 {
		t.Fatalf("projection weights have std %.4f, want about 1/√64 = 0.125", std)
	}
	for _, v := range featHost(t, be, a.B) {
		if v != 0 {
			t.Fatal("bias does not start at zero")
		}
	}
	slots := a.Slots()
	if len(slots) != 2 || slots[0].Name != "feature.proj.4_8.weight" || !slots[0].Decay || slots[1].Name != "feature.proj.4_8.bias" || slots[1].Decay ||
		slots[0].W != a.W || slots[0].G != a.G || slots[1].W != a.B || slots[1].G != a.GB {
		t.Fatalf("slots %+v", slots)
	}
	if s := mk(8, 8, false, 1).Slots(); len(s) != 1 {
		t.Fatalf("projection without bias has %d slots", len(s))
	}
	id := featHost(t, be, mk(3, 3, false, 1).W)
	for i, v := range id {
		if want := map[bool]float64{true: 1, false: 0}[i%4 == 0]; v != want {
			t.Fatalf("equal widths: W = %v, want the identity", id)
		}
	}
	if _, err := loss.NewProjection(be, "x", 0, 4, false, 1); err == nil {
		t.Fatal("a projection from 0 channels was made")
	}

	cfg := loss.FeatureConfig{Loss: "mse", LayerMap: []loss.LayerPair{{2, 4}, {4, 8}}}
	ps, err := loss.NewProjections(be, cfg, 16, 16, 1)
	if err != nil || len(ps) != 2 || ps[0] != nil || ps[1] != nil {
		t.Fatalf("equal widths without Project: %v, %v (want no projections)", ps, err)
	}
	ps, err = loss.NewProjections(be, cfg, 16, 32, 1)
	if err != nil || len(ps) != 2 || ps[0].Name != "feature.proj.2_4" || ps[1].Name != "feature.proj.4_8" || ps[1].In != 16 || ps[1].Out != 32 {
		t.Fatalf("projections %v, %v", ps, err)
	}
	if featRelErr(featHost(t, be, ps[0].W), featHost(t, be, ps[1].W)) == 0 {
		t.Fatal("two layer pairs got the same projection")
	}
}

func TestRelationLossMatchesReference(t *testing.T) {
	be := cpu.New()
	for _, sz := range []struct{ B, T, Cs, Ct int }{{1, 1, 3, 3}, {3, 5, 4, 7}, {2, 6, 8, 3}} {
		for mname, mk := range featMasks {
			t.Run(mname, func(t *testing.T) {
				B, T, Cs, Ct := sz.B, sz.T, sz.Cs, sz.Ct
				N := B * T
				mask := mk(N)
				if mask != nil && N == 1 {
					mask[0] = 1
				}
				r := rand.New(rand.NewPCG(23, uint64(N*Cs*Ct)))
				hs, ht := featRandn(r, N*Cs, 1), featRandn(r, N*Ct, 1)
				sT, tT := featTensor(t, be, "hs", hs, N, Cs), featTensor(t, be, "ht", ht, N, Ct)
				d0 := featRandn(r, N*Cs, 1)
				dT := featTensor(t, be, "dhs", d0, N, Cs)
				const scale = 0.6
				res, err := loss.RelationLoss(be, sT, dT, tT, B, T, mask, scale)
				if err != nil {
					t.Fatal(err)
				}
				ref := func() float64 { return scale * featRefRelation(hs, ht, B, T, Cs, Ct, mask) }
				want := ref()
				if math.Abs(res.Loss-want) > 1e-5*math.Abs(want)+1e-7 {
					t.Fatalf("loss %.9g, want %.9g", res.Loss, want)
				}
				if N == 1 {
					if res.Loss > 1e-6 || res.Pairs != 1 {
						t.Fatalf("one token: loss %g over %d pairs, want 0 over 1", res.Loss, res.Pairs)
					}
					return
				}
				if e := featRelErr(featSub(featHost(t, be, dT), d0), featFD(hs, ref)); e > 1e-4 {
					t.Fatalf("student gradient: relative error %.3g vs finite differences", e)
				}
			})
		}
	}
}

// TestRelationLossMaskedSequence: a sequence with no valid token counts no
// pairs and gets no gradient; masked tokens get none either.
func TestRelationLossMaskedSequence(t *testing.T) {
	be := cpu.New()
	B, T, Cs, Ct := 2, 4, 3, 5
	N := B * T
	r := rand.New(rand.NewPCG(24, 24))
	hs, ht := featRandn(r, N*Cs, 1), featRandn(r, N*Ct, 1)
	mask := []float32{1, 1, 0, 1, 0, 0, 0, 0}
	sT, tT := featTensor(t, be, "hs", hs, N, Cs), featTensor(t, be, "ht", ht, N, Ct)
	dT := featTensor(t, be, "dhs", nil, N, Cs)
	res, err := loss.RelationLoss(be, sT, dT, tT, B, T, mask, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pairs != 9 || res.Tokens != 3 {
		t.Fatalf("pairs %d tokens %d, want 9 and 3", res.Pairs, res.Tokens)
	}
	if want := featRefRelation(hs, ht, B, T, Cs, Ct, mask); math.Abs(res.Loss-want) > 1e-5*want {
		t.Fatalf("loss %g, want %g", res.Loss, want)
	}
	d := featHost(t, be, dT)
	for n := range N {
		for c := range Cs {
			if (mask[n] == 0) != (d[n*Cs+c] == 0) {
				t.Fatalf("row %d (mask %g) has gradient %g", n, mask[n], d[n*Cs+c])
			}
		}
	}
}

func TestParseLayerMap(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		Ls, Lt int
		want   string
	}{
		{"4:8,8:16", 8, 16, "4:8,8:16"},
		{" 0:0 , 8 : 16 ", 8, 16, "0:0,8:16"},
		{"auto", 4, 8, "1:2,2:4,3:6,4:8"},
		{"auto", 3, 8, "1:3,2:5,3:8"},
		{"auto", 2, 2, "1:1,2:2"},
		{"auto:2", 6, 12, "3:6,6:12"},
		{"auto:4", 6, 24, "2:8,3:12,5:20,6:24"},
		{"auto:1", 4, 30, "4:30"},
		{"auto", 6, 4, "1:1,2:1,3:2,4:3,5:3,6:4"}, // a deeper student: teacher states repeat
	} {
		pairs, err := loss.ParseLayerMap(tc.spec, tc.Ls, tc.Lt)
		if err != nil {
			t.Fatalf("%q (%d, %d layers): %v", tc.spec, tc.Ls, tc.Lt, err)
		}
		if got := loss.FormatLayerMap(pairs); got != tc.want {
			t.Fatalf("%q (%d, %d layers) = %s, want %s", tc.spec, tc.Ls, tc.Lt, got, tc.want)
		}
		if err := (loss.FeatureConfig{Loss: "cosine", LayerMap: pairs}).Validate(tc.Ls, tc.Lt); err != nil {
			t.Fatalf("%q: parsed map does not validate: %v", tc.spec, err)
		}
	}
	for _, tc := range []struct {
		spec   string
		Ls, Lt int
		want   []string // substrings of the error
	}{
		{"4-8", 8, 16, []string{`entry 1 "4-8"`, "student:teacher"}},
		{"4:8,8:x", 8, 16, []string{`entry 2 "8:x"`}},
		{"4:8,", 8, 16, []string{`entry 2 ""`}},
		{"9:16", 8, 16, []string{`entry 1 "9:16"`, "student hidden state 9 is out of range", "0…8"}},
		{"4:8,2:17", 8, 16, []string{`entry 2 "2:17"`, "teacher hidden state 17", "0…16"}},
		{"-1:3", 8, 16, []string{`"-1:3"`, "student hidden state -1"}},
		{"4:8,4:8", 8, 16, []string{`entry 2 "4:8"`, "repeats"}},
		{"", 8, 16, []string{"empty"}},
		{"auto:0", 8, 16, []string{`"auto:0"`, "1…8"}},
		{"auto:9", 8, 16, []string{`"auto:9"`}},
		{"auto:x", 8, 16, []string{`"auto:x"`}},
		{"autox", 8, 16, []string{`"autox"`}},
		{"auto", 0, 16, []string{"0"}},
	} {
		_, err := loss.ParseLayerMap(tc.spec, tc.Ls, tc.Lt)
		if err == nil {
			t.Fatalf("%q was accepted", tc.spec)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%q: error %q does not say %q", tc.spec, err, w)
			}
		}
	}
}

func TestFeatureConfigValidate(t *testing.T) {
	ok := loss.FeatureConfig{Loss: "mse", LayerMap: []loss.LayerPair{{4, 8}}}
	if err := ok.Validate(8, 16); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  loss.FeatureConfig
		want string
	}{
		{loss.FeatureConfig{Loss: "l1", LayerMap: ok.LayerMap}, `unknown loss "l1"`},
		{loss.FeatureConfig{Loss: "mse"}, "empty"},
		{loss.FeatureConfig{Loss: "mse", LayerMap: []loss.LayerPair{{4, 8}, {9, 8}}}, `entry 2 "9:8": student hidden state 9`},
		{loss.FeatureConfig{Loss: "mse", LayerMap: []loss.LayerPair{{4, 17}}}, `entry 1 "4:17": teacher hidden state 17`},
		{loss.FeatureConfig{Loss: "mse", LayerMap: []loss.LayerPair{{4, 8}, {4, 8}}}, "repeats"},
	} {
		err := tc.cfg.Validate(8, 16)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: error %v, want one saying %q", tc.cfg, err, tc.want)
		}
	}
	if !(loss.FeatureConfig{Project: true}).NeedsProjection(8, 8) || (loss.FeatureConfig{}).NeedsProjection(8, 8) || !(loss.FeatureConfig{}).NeedsProjection(8, 16) {
		t.Fatal("NeedsProjection")
	}
}

func TestFeatureLossBadInput(t *testing.T) {
	be := cpu.New()
	s := featTensor(t, be, "s", nil, 4, 3)
	s5 := featTensor(t, be, "s5", nil, 5, 3)
	tt := featTensor(t, be, "t", nil, 4, 6)
	t3 := featTensor(t, be, "t3", nil, 4, 3)
	d := featTensor(t, be, "d", nil, 4, 6)
	proj, err := loss.NewProjection(be, "p", 3, 6, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := loss.NewProjection(be, "q", 6, 3, false, 1)
	mse := loss.FeatureConfig{Loss: "mse"}
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"kind", func() error {
			_, err := loss.FeatureLoss(be, s, nil, tt, proj, nil, loss.FeatureConfig{Loss: "l2"}, 1)
			return err
		}, "unknown loss"},
		{"no projection", func() error { _, err := loss.FeatureLoss(be, s, nil, tt, nil, nil, mse, 1); return err }, "a projection is needed"},
		{"project asked", func() error {
			_, err := loss.FeatureLoss(be, s, nil, t3, nil, nil, loss.FeatureConfig{Loss: "mse", Project: true}, 1)
			return err
		}, "asks for a projection"},
		{"wrong projection", func() error { _, err := loss.FeatureLoss(be, s, nil, tt, wrong, nil, mse, 1); return err }, "does not map width 3 to 6"},
		{"rows", func() error { _, err := loss.FeatureLoss(be, s5, nil, tt, proj, nil, mse, 1); return err }, "differ in rows"},
		{"grad shape", func() error { _, err := loss.FeatureLoss(be, s, d, tt, proj, nil, mse, 1); return err }, "gradient"},
		{"mask length", func() error { _, err := loss.FeatureLoss(be, s, nil, tt, proj, []float32{1}, mse, 1); return err }, "mask of 1 entries for 4 rows"},
		{"mask negative", func() error {
			_, err := loss.FeatureLoss(be, s, nil, tt, proj, []float32{1, -1, 1, 1}, mse, 1)
			return err
		}, "row 1"},
		{"mask zero", func() error { _, err := loss.FeatureLoss(be, s, nil, tt, proj, make([]float32, 4), mse, 1); return err }, "all zero"},
		{"scale", func() error { _, err := loss.FeatureLoss(be, s, nil, tt, proj, nil, mse, math.NaN()); return err }, "scale"},
		{"relation shape", func() error { _, err := loss.RelationLoss(be, s, nil, tt, 3, 2, nil, 1); return err }, "not 3 sequences of 2 tokens"},
		{"relation grad", func() error { _, err := loss.RelationLoss(be, s, d, tt, 2, 2, nil, 1); return err }, "gradient"},
		{"relation mask", func() error { _, err := loss.RelationLoss(be, s, nil, tt, 2, 2, make([]float32, 4), 1); return err }, "relation: no tokens"},
	} {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}

// featTorchCase is one case of testdata/feature/feature.json, written by
// scripts/fixtures/make_feature_fixtures.py from PyTorch's F.mse_loss,
// F.cosine_similarity and autograd in float64.
type featTorchCase struct {
	Name, Kind                     string
	N, Cs, Ct, B, T                int
	Mask                           []float32
	Student, Teacher, Weight, Bias []float64
	Loss                           float64
	GradStudent                    []float64 `json:"grad_student"`
	GradWeight                     []float64 `json:"grad_weight"`
	GradBias                       []float64 `json:"grad_bias"`
}

func TestFeatureLossMatchesTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/feature/feature.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Torch string
		Cases []featTorchCase
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Cases) == 0 {
		t.Fatal("no cases in the fixture")
	}
	be := cpu.New()
	for _, c := range fx.Cases {
		t.Run(c.Name, func(t *testing.T) {
			s := featTensor(t, be, "hs", c.Student, c.N, c.Cs)
			h := featTensor(t, be, "ht", c.Teacher, c.N, c.Ct)
			d := featTensor(t, be, "dhs", nil, c.N, c.Cs)
			var res loss.FeatureResult
			var proj *loss.Projection
			if c.Kind == "relation" {
				res, err = loss.RelationLoss(be, s, d, h, c.B, c.T, c.Mask, 1)
			} else {
				if c.Weight != nil {
					proj, err = loss.NewProjection(be, "p", c.Cs, c.Ct, c.Bias != nil, 1)
					if err != nil {
						t.Fatal(err)
					}
					be.Upload(proj.W, featTensorValues(c.Weight))
					if c.Bias != nil {
						be.Upload(proj.B, featTensorValues(c.Bias))
					}
				}
				res, err = loss.FeatureLoss(be, s, d, h, proj, c.Mask, loss.FeatureConfig{Loss: c.Kind}, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(res.Loss-c.Loss) > 1e-5*math.Abs(c.Loss) {
				t.Fatalf("loss %.9g, PyTorch %.9g (torch %s)", res.Loss, c.Loss, fx.Torch)
			}
			check := func(what string, got *kdrt.Tensor, want []float64) {
				if e := featRelErr(featHost(t, be, got), want); e > 1e-5 {
					t.Fatalf("%s: relative error %.3g vs PyTorch", what, e)
				}
			}
			check("student gradient", d, c.GradStudent)
			if proj != nil {
				check("projection weight gradient", proj.G, c.GradWeight)
				if c.GradBias != nil {
					check("projection bias gradient", proj.GB, c.GradBias)
				}
			}
		})
	}
}
