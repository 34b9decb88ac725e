package loss_test

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The fixture testdata/torch/divergences.safetensors holds PyTorch's numbers
// (scripts/fixtures/make_loss_fixtures.py; testdata/torch/README.md): TRL
// GKDTrainer's forward KL, reverse KL and generalized JSD, total variation,
// the skew divergences, DistiLLM's skew losses, F.cross_entropy, and a top-k
// teacher in both tail modes, each as a loss and a gradient with respect to
// the student's logits, computed in float64.
//
// The Go losses take hidden states and an lm_head, so the fixture's logits go
// in through an identity head: hidden = the student's logits (C = V) and
// W = I [V, V]; the gradient with respect to the hidden states is then the
// gradient with respect to the logits. An lm_head product cannot carry −∞
// (−∞·0 = NaN), so for that path the student's −∞ logits become −1e30, whose
// probability is exactly 0 in float32 as in float64; the backend kernels are
// also called directly on the true −∞ logits.
//
// TRL's reduction (labels given) is Σ over unmasked tokens of the per-token
// divergence / the number of unmasked tokens, without τ²: loss.KD with the
// fixture's 0/1 mask, scale 1 and NoTSquared gives the same number.
//
// Agreement: every loss within relative error 1e-5, and every gradient within
// 1e-5 of its own max-norm: max|got − want| ≤ 1e-5·max|want| over the tensor
// (float32 arithmetic against float64 references; torch itself in float32
// meets this bound on every dense case, and not a row-wise one).

const (
	torchFixture = "testdata/torch/divergences.safetensors"
	torchTol     = 1e-5
	// torchNegInf stands for −∞ in the identity-head path.
	torchNegInf = -1e30
)

type torchSet struct {
	name    string
	N, V    int
	student []float32 // [N, V] with true −∞
	teacher []float32 // [N, V]
	mask    []float32 // [N], 0 or 1
	targets []int32   // [N], −100 where masked
	tokens  int
}

type torchFile struct {
	t    *testing.T
	f    *safetensors.File
	sets map[string]*torchSet
}

func openTorchFixture(t *testing.T) *torchFile {
	t.Helper()
	f, err := safetensors.Open(torchFixture)
	if err != nil {
		t.Fatalf("%v (regenerate with scripts/fixtures/make_loss_fixtures.py)", err)
	}
	t.Cleanup(func() { f.Close() })
	return &torchFile{t: t, f: f, sets: map[string]*torchSet{}}
}

func (tf *torchFile) f32(name string) []float32 {
	tf.t.Helper()
	v, err := tf.f.Float32(name)
	if err != nil {
		tf.t.Fatal(err)
	}
	return v
}

func (tf *torchFile) i32(name string) []int32 {
	tf.t.Helper()
	v, err := tf.f.Int32(name)
	if err != nil {
		tf.t.Fatal(err)
	}
	return v
}

func (tf *torchFile) has(name string) bool {
	_, ok := tf.f.Info(name)
	return ok
}

func (tf *torchFile) scalar(name string) float64 {
	tf.t.Helper()
	info, ok := tf.f.Info(name)
	if !ok || len(info.Shape) != 0 {
		tf.t.Fatalf("%s: want a scalar, have %+v", name, info)
	}
	return float64(tf.f32(name)[0])
}

func (tf *torchFile) set(name string) *torchSet {
	tf.t.Helper()
	if s, ok := tf.sets[name]; ok {
		return s
	}
	info, ok := tf.f.Info(name + ".student")
	if !ok || len(info.Shape) != 2 {
		tf.t.Fatalf("%s.student: %+v", name, info)
	}
	s := &torchSet{name: name, N: info.Shape[0], V: info.Shape[1],
		student: tf.f32(name + ".student"), teacher: tf.f32(name + ".teacher"),
		mask: tf.f32(name + ".mask"), targets: tf.i32(name + ".targets")}
	for _, m := range s.mask {
		if m != 0 {
			s.tokens++
		}
	}
	tf.sets[name] = s
	return s
}

func torchTensor(t *testing.T, be *cpu.Backend, name string, x []float32, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	copy(cpu.Float32s(tt), x)
	return tt
}

func torchInts(t *testing.T, be *cpu.Backend, name string, x []int32, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.I32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	copy(cpu.Int32s(tt), x)
	return tt
}

// identityHead is W = I [V, V].
func identityHead(t *testing.T, be *cpu.Backend, V int) loss.Head {
	w := make([]float32, V*V)
	for i := range V {
		w[i*V+i] = 1
	}
	return loss.Head{W: torchTensor(t, be, "identity_head", w, V, V)}
}

// finiteStudent replaces −∞ logits by torchNegInf for the identity-head path.
func finiteStudent(x []float32) []float32 {
	y := append([]float32(nil), x...)
	for i, v := range y {
		if math.IsInf(float64(v), -1) {
			y[i] = torchNegInf
		}
	}
	return y
}

// relScalar is |got − want| / |want|.
func relScalar(got, want float64) float64 {
	return math.Abs(got-want) / math.Abs(want)
}

// relMax is max|got − want| / max|want| (float64 arithmetic), with the row
// whose error is largest relative to its own max-norm, for messages.
func relMax(got, want []float32, V int) (rel float64, worstRow int, rowRel float64) {
	var d, w float64
	worstRow = -1
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
		w = math.Max(w, math.Abs(float64(want[i])))
	}
	if V > 0 {
		for n := 0; n < len(want)/V; n++ {
			var rd, rw float64
			for j := n * V; j < (n+1)*V; j++ {
				rd = math.Max(rd, math.Abs(float64(got[j])-float64(want[j])))
				rw = math.Max(rw, math.Abs(float64(want[j])))
			}
			if rw > 0 && rd/rw > rowRel {
				worstRow, rowRel = n, rd/rw
			}
		}
	}
	if w == 0 {
		if d == 0 {
			return 0, worstRow, rowRel
		}
		return math.Inf(1), worstRow, rowRel
	}
	return d / w, worstRow, rowRel
}

func checkLoss(t *testing.T, what string, got, want float64) {
	t.Helper()
	if r := relScalar(got, want); !(r <= torchTol) {
		t.Errorf("%s: loss %.9g, torch %.9g (relative error %.3g)", what, got, want, r)
	}
}

func checkGrad(t *testing.T, what string, got, want []float32, V int) {
	t.Helper()
	r, row, rr := relMax(got, want, V)
	if !(r <= torchTol) {
		t.Errorf("%s: gradient max|Δ|/max|torch| = %.3g (worst row %d: %.3g of its own max-norm)", what, r, row, rr)
	}
}

var (
	torchDivRe      = regexp.MustCompile(`^(s\d+)\.(?:(sparse_renorm|sparse_tail)\.)?(fkl|rkl|jsd|tvd|skew_kl|skew_rkl)(?:\.(beta|alpha)=([0-9.]+))?\.T=([0-9.]+)\.loss$`)
	torchDistillmRe = regexp.MustCompile(`^(s\d+)\.distillm\.(skew_kl|skew_rkl)\.alpha=([0-9.]+)\.T=([0-9.]+)\.loss$`)
	torchCERe       = regexp.MustCompile(`^(s\d+)\.ce\.loss$`)
	torchEntropyRe  = regexp.MustCompile(`^(s\d+)\.teacher_entropy\.T=([0-9.]+)\.loss$`)
)

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// torchConfigs are the KD configurations that must reproduce one fixture
// divergence: TRL's β = 0 and β = 1 are ForwardKL and ReverseKL, and JSD at
// those β.
func torchConfigs(kind string, param, T float64) []loss.KDConfig {
	c := loss.KDConfig{Temperature: T, NoTSquared: true}
	with := func(k kdrt.DivergenceKind, f func(*loss.KDConfig)) loss.KDConfig {
		d := c
		d.Divergence = k
		if f != nil {
			f(&d)
		}
		return d
	}
	switch kind {
	case "fkl":
		return []loss.KDConfig{with(kdrt.ForwardKL, nil), with(kdrt.JSD, func(d *loss.KDConfig) { d.Beta = 0 })}
	case "rkl":
		return []loss.KDConfig{with(kdrt.ReverseKL, nil), with(kdrt.JSD, func(d *loss.KDConfig) { d.Beta = 1 })}
	case "jsd":
		return []loss.KDConfig{with(kdrt.JSD, func(d *loss.KDConfig) { d.Beta = param })}
	case "tvd":
		return []loss.KDConfig{with(kdrt.TVD, nil)}
	case "skew_kl":
		return []loss.KDConfig{with(kdrt.SkewKL, func(d *loss.KDConfig) { d.Alpha = param })}
	case "skew_rkl":
		return []loss.KDConfig{with(kdrt.SkewReverseKL, func(d *loss.KDConfig) { d.Alpha = param })}
	}
	panic(kind)
}

func cfgLabel(c loss.KDConfig) string {
	s := c.Divergence.String()
	switch c.Divergence {
	case kdrt.JSD:
		s += fmt.Sprintf("(beta=%g)", c.Beta)
	case kdrt.SkewKL, kdrt.SkewReverseKL:
		s += fmt.Sprintf("(alpha=%g)", c.Alpha)
	}
	return s
}

// torchRunKD runs loss.KD through the identity head and returns the loss and
// the gradient with respect to the hidden states (= the logits).
func torchRunKD(t *testing.T, s *torchSet, teacher func(be *cpu.Backend) loss.Teacher, cfg loss.KDConfig, scale float64, chunkRows int) (float64, []float32) {
	t.Helper()
	be := cpu.New()
	hidden := torchTensor(t, be, "hidden", finiteStudent(s.student), s.N, s.V)
	dHidden := torchTensor(t, be, "dhidden", make([]float32, s.N*s.V), s.N, s.V)
	res, err := loss.KD(be, hidden, identityHead(t, be, s.V), dHidden, teacher(be), s.mask, cfg, scale, loss.Options{ChunkRows: chunkRows})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens != s.tokens {
		t.Fatalf("KD counted %d tokens, the mask has %d", res.Tokens, s.tokens)
	}
	return res.Loss, append([]float32(nil), cpu.Float32s(dHidden)...)
}

// torchChunks: 2 and 4 do not divide the fixtures' 7 and 5 rows; 0 is the
// default budget (one chunk: the unfused computation).
var torchChunks = []int{2, 4, 0}

func TestTorchDivergences(t *testing.T) {
	tf := openTorchFixture(t)
	counts := map[string]int{}
	for _, name := range tf.f.Names() {
		if !strings.HasSuffix(name, ".loss") {
			continue
		}
		switch {
		case torchDivRe.MatchString(name):
			m := torchDivRe.FindStringSubmatch(name)
			counts["divergence"]++
			t.Run(strings.TrimSuffix(name, ".loss"), func(t *testing.T) {
				torchDivergenceCase(t, tf, m)
			})
		case torchDistillmRe.MatchString(name):
			m := torchDistillmRe.FindStringSubmatch(name)
			counts["distillm"]++
			t.Run(strings.TrimSuffix(name, ".loss"), func(t *testing.T) {
				torchDistillmCase(t, tf, m)
			})
		case torchCERe.MatchString(name):
			m := torchCERe.FindStringSubmatch(name)
			counts["ce"]++
			t.Run(strings.TrimSuffix(name, ".loss"), func(t *testing.T) {
				torchCECase(t, tf, tf.set(m[1]))
			})
		case torchEntropyRe.MatchString(name):
			counts["entropy"]++ // used by the DistiLLM cases
		default:
			t.Errorf("fixture loss %q matches no case this test knows", name)
		}
	}
	t.Logf("fixture cases: %v", counts)
	if counts["divergence"] == 0 || counts["distillm"] == 0 || counts["ce"] == 0 {
		t.Fatalf("fixture is missing case families: %v", counts)
	}
}

func torchDivergenceCase(t *testing.T, tf *torchFile, m []string) {
	s := tf.set(m[1])
	tail, kind := m[2], m[3]
	var param float64
	if m[5] != "" {
		param = mustFloat(t, m[5])
	}
	T := mustFloat(t, m[6])
	base := strings.TrimSuffix(m[0], ".loss")
	want := tf.scalar(base + ".loss")
	wantGrad := tf.f32(base + ".grad")
	wantRows := tf.f32(base + ".rows")

	var ids []int32
	var lps []float32
	K := 0
	if tail != "" {
		top := fmt.Sprintf("%s.topk.T=%s", s.name, m[6])
		ids, lps = tf.i32(top+".ids"), tf.f32(top+".logprobs")
		K = len(ids) / s.N
	}
	teacher := func(be *cpu.Backend) loss.Teacher {
		if tail == "" {
			return loss.TeacherLogits{Logits: torchTensor(t, be, "teacher", s.teacher, s.N, s.V)}
		}
		return loss.TeacherTopK{IDs: torchInts(t, be, "ids", ids, s.N, K), LogProbs: torchTensor(t, be, "logprobs", lps, s.N, K)}
	}

	for ci, cfg := range torchConfigs(kind, param, T) {
		if tail == "sparse_tail" {
			cfg.Tail = kdrt.TailBucket
		} else {
			cfg.Tail = kdrt.Renormalize
		}
		label := cfgLabel(cfg)
		// loss.KD through the identity head, chunked.
		for _, r := range torchChunks {
			got, grad := torchRunKD(t, s, teacher, cfg, 1, r)
			what := fmt.Sprintf("KD %s ChunkRows=%d", label, r)
			checkLoss(t, what, got, want)
			checkGrad(t, what, grad, wantGrad, s.V)
		}
		// The τ² convention and the scale multiply loss and gradient.
		if ci == 0 {
			c := cfg
			c.NoTSquared = false
			const scale = 0.75
			f := scale * T * T
			got, grad := torchRunKD(t, s, teacher, c, scale, 2)
			scaled := make([]float32, len(wantGrad))
			for i, g := range wantGrad {
				scaled[i] = float32(f * float64(g))
			}
			what := fmt.Sprintf("KD %s with τ² and scale %g", label, scale)
			checkLoss(t, what, got, f*want)
			checkGrad(t, what, grad, scaled, s.V)
		}
		// The backend kernel on the true −∞ logits, per row.
		be := cpu.New()
		w := make([]float32, s.N)
		for n, mk := range s.mask {
			w[n] = float32(float64(mk) / float64(s.tokens))
		}
		student := torchTensor(t, be, "student", s.student, s.N, s.V)
		losses := torchTensor(t, be, "losses", make([]float32, s.N), s.N)
		weights := torchTensor(t, be, "weights", w, s.N)
		ds := torchTensor(t, be, "dstudent", make([]float32, s.N*s.V), s.N, s.V)
		p := kdrt.DivergenceParams{Kind: cfg.Divergence, Temperature: float32(T), Beta: float32(cfg.Beta), Alpha: float32(cfg.Alpha), Tail: cfg.Tail}
		if tail == "" {
			be.Divergence(losses, ds, student, torchTensor(t, be, "teacher", s.teacher, s.N, s.V), weights, p)
		} else {
			be.SparseDivergence(losses, ds, student, torchInts(t, be, "ids", ids, s.N, K), torchTensor(t, be, "logprobs", lps, s.N, K), nil, weights, p)
		}
		rows := make([]float32, s.N)
		wantW := make([]float32, s.N)
		var total float64
		for n, l := range cpu.Float32s(losses) {
			total += float64(l)
			if w[n] != 0 {
				rows[n] = l / w[n]
				wantW[n] = wantRows[n]
			} else if l != 0 {
				t.Errorf("kernel %s: masked row %d has loss %g", label, n, l)
			}
		}
		what := "kernel " + label + " (true −∞ logits)"
		checkLoss(t, what, total, want)
		checkGrad(t, what+" per-row losses", rows, wantW, 0)
		checkGrad(t, what, cpu.Float32s(ds), wantGrad, s.V)
	}
}

// torchDistillmCase: DistiLLM's skewed_forward_kl is −Σ p·log m, which is
// KL(p ‖ m) plus the teacher's entropy H(p) (a constant for the student):
// equal gradients, values apart by the mean entropy. Its skewed_reverse_kl is
// exactly KL(q ‖ m).
func torchDistillmCase(t *testing.T, tf *torchFile, m []string) {
	s := tf.set(m[1])
	kind, alpha, T := m[2], mustFloat(t, m[3]), mustFloat(t, m[4])
	base := strings.TrimSuffix(m[0], ".loss")
	want := tf.scalar(base + ".loss")
	offset := 0.0
	if kind == "skew_kl" {
		offset = tf.scalar(fmt.Sprintf("%s.teacher_entropy.T=%s.loss", s.name, m[4]))
	}
	cfg := torchConfigs(kind, alpha, T)[0]
	teacher := func(be *cpu.Backend) loss.Teacher {
		return loss.TeacherLogits{Logits: torchTensor(t, be, "teacher", s.teacher, s.N, s.V)}
	}
	for _, r := range torchChunks {
		got, grad := torchRunKD(t, s, teacher, cfg, 1, r)
		what := fmt.Sprintf("KD %s ChunkRows=%d", cfgLabel(cfg), r)
		// the sum is compared with DistiLLM's value
		checkLoss(t, what+" + mean teacher entropy", got+offset, want)
		if tf.has(base + ".grad") {
			checkGrad(t, what+" vs DistiLLM", grad, tf.f32(base+".grad"), s.V)
		}
	}
}

func torchCECase(t *testing.T, tf *torchFile, s *torchSet) {
	want := tf.scalar(s.name + ".ce.loss")
	wantGrad := tf.f32(s.name + ".ce.grad")
	tokens := 0
	for _, tg := range s.targets {
		if tg != kdrt.IgnoreIndex {
			tokens++
		}
	}
	for _, r := range torchChunks {
		be := cpu.New()
		hidden := torchTensor(t, be, "hidden", finiteStudent(s.student), s.N, s.V)
		dHidden := torchTensor(t, be, "dhidden", make([]float32, s.N*s.V), s.N, s.V)
		got, n, err := loss.CrossEntropy(be, hidden, identityHead(t, be, s.V), dHidden, s.targets, 1, loss.Options{ChunkRows: r})
		if err != nil {
			t.Fatal(err)
		}
		if n != tokens {
			t.Errorf("CrossEntropy counted %d tokens, want %d", n, tokens)
		}
		what := fmt.Sprintf("CrossEntropy ChunkRows=%d", r)
		checkLoss(t, what, got, want)
		checkGrad(t, what, cpu.Float32s(dHidden), wantGrad, s.V)
	}
	// The kernels on the true −∞ logits.
	be := cpu.New()
	logits := torchTensor(t, be, "logits", s.student, s.N, s.V)
	targets := torchInts(t, be, "targets", s.targets, s.N)
	losses := torchTensor(t, be, "losses", make([]float32, s.N), s.N)
	dl := torchTensor(t, be, "dlogits", make([]float32, s.N*s.V), s.N, s.V)
	be.CrossEntropy(losses, logits, targets)
	be.CrossEntropyBackward(dl, logits, targets, nil, float32(1/float64(tokens)))
	var total float64
	for _, l := range cpu.Float32s(losses) {
		total += float64(l)
	}
	checkLoss(t, "CrossEntropy kernel (true −∞ logits)", total/float64(tokens), want)
	checkGrad(t, "CrossEntropy kernel (true −∞ logits)", cpu.Float32s(dl), wantGrad, s.V)
}
