package train

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// sharpTeacher writes a copy of the world's teacher whose final norm is
// scaled up, so its next-token distributions are peaked like a trained
// model's (a random one is nearly uniform, and its top-k would hold little).
func sharpTeacher(t *testing.T, w *world) string {
	t.Helper()
	be := cpu.New()
	m, err := model.LoadDir(w.teacher, be)
	if err != nil {
		t.Fatal(err)
	}
	norm := cpu.Float32s(m.Param("model.norm.weight").W)
	for i := range norm {
		norm[i] *= 40
	}
	dir := filepath.Join(w.dir, "sharp-teacher")
	if err := m.SaveDir(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := CopyTokenizer(w.teacher, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTrainFromTeacherCache caches a tiny teacher, trains a student from the
// cache, and checks that its KL to the (full) teacher falls as it does when
// the same student trains against the online teacher.
func TestTrainFromTeacherCache(t *testing.T) {
	w := newWorld(t)
	teacher := sharpTeacher(t, w)
	cacheDir := filepath.Join(w.dir, "cache")
	var log bytes.Buffer
	cc := CacheConfig{Teacher: teacher, Data: w.sft, Output: cacheDir, K: 16, Temperature: 1, MaxLen: 64, Template: "none", ExamplesPerShard: 5}
	if err := CacheTeacher(context.Background(), cpu.New(), cc, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var out bytes.Buffer
	if err := InspectCache(cacheDir, 2, 3, &out); err != nil || !strings.Contains(out.String(), "p=") {
		t.Fatalf("inspect: %v\n%s", err, out.String())
	}

	fromCache := w.recipe(filepath.Join(w.dir, "from-cache"))
	fromCache.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: cacheDir}
	fromCache.MaxSteps = 30
	run(t, fromCache, false)
	online := w.recipe(filepath.Join(w.dir, "online"))
	online.Teacher = teacher
	online.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
	online.MaxSteps = 30
	run(t, online, false)

	be := cpu.New()
	tm, _ := model.LoadDir(teacher, be)
	tok, err := tokenizer.LoadDir(teacher)
	if err != nil {
		t.Fatal(err)
	}
	rows, _, _, err := data.LoadSFT(w.sft, tok, data.Options{MaxLen: 64, Template: "none"})
	if err != nil {
		t.Fatal(err)
	}
	kl := func(dir string) float64 {
		m, err := model.LoadDir(dir, be)
		if err != nil {
			t.Fatal(err)
		}
		e, err := EvaluateSFT(be, m, tm, rows, 4, 256, loss.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return e.KL
	}
	k0, kc, ko := kl(w.student), kl(fromCache.Output), kl(online.Output)
	t.Logf("KL to the teacher: start %.4f, after training from the cache %.4f, from the online teacher %.4f", k0, kc, ko)
	if !(kc < 0.5*k0) || kc > 1.5*ko {
		t.Fatalf("from the cache the KL went %.4f → %.4f; online %.4f", k0, kc, ko)
	}

	// A cache made for other data, or with another tokenizer, is refused.
	other := w.recipe(filepath.Join(w.dir, "other"))
	other.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: cacheDir}
	other.Data.MaxLen = 8 // truncation changes the examples
	if _, err := Run(context.Background(), be, other, Options{}); err == nil || !strings.Contains(err.Error(), "made for other data") {
		t.Errorf("cache over other data: %v", err)
	}
	hot := w.recipe(filepath.Join(w.dir, "hot"))
	hot.Objectives.KD = &KDTerm{Weight: 1, Temperature: 2, Cache: cacheDir}
	if _, err := Run(context.Background(), be, hot, Options{}); err == nil || !strings.Contains(err.Error(), "temperature 2 differs") {
		t.Errorf("cache at another temperature: %v", err)
	}
	otherTeacher := w.recipe(filepath.Join(w.dir, "other-teacher"))
	otherTeacher.Teacher = w.teacher
	otherTeacher.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: cacheDir}
	if _, err := Run(context.Background(), be, otherTeacher, Options{}); err == nil || !strings.Contains(err.Error(), "was made by teacher") {
		t.Errorf("cache from another teacher: %v", err)
	}
	// The cache mixes with SFT.
	mixed := w.recipe(filepath.Join(w.dir, "mixed"))
	mixed.Objectives.SFT = &SFTTerm{Weight: 0.5}
	mixed.Objectives.KD = &KDTerm{Weight: 0.5, Temperature: 1, Cache: cacheDir}
	mixed.MaxSteps = 10
	if sum, log := run(t, mixed, false); !(sum.After.KL < sum.Before.KL) || !(sum.After.Loss < sum.Before.Loss) {
		t.Errorf("sft + cached kd: %s → %s\n%s", sum.Before, sum.After, log)
	}
	if err := CacheTeacher(context.Background(), be, CacheConfig{Teacher: teacher, Data: w.sft, Output: filepath.Join(w.dir, "big-k"), K: 500, Temperature: 1}, &log); err == nil || !strings.Contains(err.Error(), "k = 500 is larger than the teacher's vocabulary of 259") {
		t.Errorf("k above the vocabulary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "big-k")); err == nil {
		t.Errorf("a refused cache-teacher run left a folder behind")
	}
}
