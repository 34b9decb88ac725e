package train

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// BenchmarkTeacherCache measures the teacher cache on the demo's teacher (a
// trained 0.8M-parameter model, byte-level vocabulary of 259) over the demo's
// validation text (29,513 tokens), for k = 8, 32, 64, 128:
//
//   - bytes per position on disk;
//
//   - fidelity: the mean KL from the teacher's full distribution to the cached
//     one (the stored top-k and stored tail mass, renormalized, the tail
//     spread evenly over the other ids), beside the same for the exact,
//     unquantized top-k (what truncation alone costs);
//
//   - the relative difference the cache makes to a student's KD loss (forward
//     KL, tail bucket) against the online teacher's, for the demo's student
//     at initialization.
//
//     go test -run '^$' -bench TeacherCache -benchtime 1x ./kd/train/
func BenchmarkTeacherCache(b *testing.B) {
	dir := b.TempDir()
	teacherDir := filepath.Join(dir, "teacher")
	for _, f := range []string{"config.json", "model.safetensors"} {
		if err := mkdirCopy(filepath.Join("../demo/assets/teacher", f), filepath.Join(teacherDir, f)); err != nil {
			b.Fatal(err)
		}
	}
	if err := CopyTokenizer("../demo/assets/tokenizer", teacherDir); err != nil {
		b.Fatal(err)
	}
	studentDir := filepath.Join(dir, "student")
	be := cpu.New()
	if err := InitModel(be, "../demo/assets/student-config.json", "../demo/assets/tokenizer", 1, studentDir, false); err != nil {
		b.Fatal(err)
	}
	valData := "../demo/assets/data/val.jsonl.gz"
	teacher, _ := model.LoadDir(teacherDir, be)
	student, _ := model.LoadDir(studentDir, be)
	tok, _ := tokenizer.LoadDir(teacherDir)
	rows, _, _, err := data.LoadSFT(valData, tok, cacheDataOptions(128, "none", "stop", 259))
	if err != nil {
		b.Fatal(err)
	}
	full, err := EvaluateSFT(be, student, teacher, rows, 16, 256, loss.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range []int{8, 32, 64, 128} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			out := filepath.Join(dir, fmt.Sprintf("cache-%d", k))
			for b.Loop() {
				if err := CacheTeacher(context.Background(), be, CacheConfig{Teacher: teacherDir, Data: valData, Output: out, K: k,
					Temperature: 1, MaxLen: 128, Template: "none", BatchSize: 16}, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			r, err := cache.Open(out)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			klFull, klExact := cacheFidelity(b, teacher, r, rows, k)
			cached := make([]data.Example, len(rows))
			copy(cached, rows)
			if err := attachCache(r)(cached); err != nil {
				b.Fatal(err)
			}
			sparse, err := EvaluateSFT(be, student, nil, cached, 16, 256, loss.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.Stats().BytesPerPosition, "bytes/token")
			b.ReportMetric(klFull, "KL(full‖cached)")
			b.ReportMetric(klExact, "KL(full‖exact-topk)")
			b.ReportMetric(math.Abs(sparse.KL-full.KL)/full.KL, "KD-loss-rel-diff")
		})
	}
}

// cacheFidelity is the mean, over the cached positions, of KL(p ‖ p̂) with p
// the teacher's full distribution and p̂ the cached top-k plus the remaining
// mass spread evenly over the other ids.
func cacheFidelity(b *testing.B, teacher *model.Model, r *cache.Reader, rows []data.Example, K int) (cached, exact float64) {
	V := teacher.Config.Vocab
	lp := make([]float64, V)
	n := 0
	// reconstruct is the teacher as the tail-bucket divergence knows it: the
	// top-k and the stored tail mass, renormalized, the tail spread evenly
	// over the ids outside the top-k.
	reconstruct := func(ids []int32, lps []float32, tail float32) []float64 {
		q := make([]float64, V)
		sum := math.Exp(float64(tail))
		for _, l := range lps {
			sum += math.Exp(float64(l))
		}
		for j := range q {
			q[j] = math.Exp(float64(tail)) / float64(V-K) / sum
		}
		for k, id := range ids {
			q[id] = math.Exp(float64(lps[k])) / sum
		}
		return q
	}
	kl := func(q []float64) float64 {
		var d float64
		for j := range V {
			if pj := math.Exp(lp[j]); pj > 0 && q[j] > 0 {
				d += pj * (lp[j] - math.Log(q[j]))
			}
		}
		return d
	}
	for i, row := range rows {
		e, err := r.Get(i)
		if err != nil {
			b.Fatal(err)
		}
		ex, err := teacherTopK(teacher, rows[i:i+1], 256, K, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := teacher.Forward(model.Batch{B: 1, T: len(row.Tokens), IDs: row.Tokens}); err != nil {
			b.Fatal(err)
		}
		logits := cpu.Float32s(teacher.Logits())
		for p := 1; p < len(row.Tokens); p++ {
			logSoftmax64(lp, logits[(p-1)*V:p*V], 1)
			cached += kl(reconstruct(e.TopK.IDs[p*K:(p+1)*K], e.TopK.LogProbs[p*K:(p+1)*K], e.Tail[p]))
			exact += kl(reconstruct(ex[0].TopK.IDs[p*K:(p+1)*K], ex[0].TopK.LogProbs[p*K:(p+1)*K], ex[0].Tail[p]))
			n++
		}
	}
	return cached / float64(n), exact / float64(n)
}

func mkdirCopy(src, dst string) error {
	if err := osMkdirAll(filepath.Dir(dst)); err != nil {
		return err
	}
	return copyFile(src, dst)
}
