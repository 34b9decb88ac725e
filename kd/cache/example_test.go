package cache_test

import (
	"fmt"
	"log"
	"math"
	"os"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
)

// A teacher's top-2 over two examples, written, reopened and read back.
func Example() {
	dir, err := os.MkdirTemp("", "kdcache-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	tokens := [][]int32{{5, 7, 9}, {5, 8}}
	h := cache.Header{
		Teacher:       "teachers/tiny",
		TokenizerHash: "f00d",                 // tokenizer.Tokenizer.Hash() of the teacher
		DataHash:      cache.DataHash(tokens), // the examples, in order
		K:             2,
		Temperature:   1,
		Vocab:         10,
		Examples:      len(tokens),
	}
	lp := func(p float64) float32 { return float32(math.Log(p)) }
	teacher := func(i int) cache.Entry {
		// Position 0 has no teacher; position j holds the distribution that
		// predicted token j. Tail nil: log(1 − Σp) of each position.
		n := len(tokens[i])
		t := data.TopK{K: 2, IDs: make([]int32, 2*n), LogProbs: make([]float32, 2*n), Has: make([]bool, n)}
		for j := 1; j < n; j++ {
			t.Has[j] = true
			t.IDs[2*j], t.IDs[2*j+1] = tokens[i][j], 3
			t.LogProbs[2*j], t.LogProbs[2*j+1] = lp(0.7), lp(0.2)
		}
		return cache.Entry{TopK: t}
	}

	w, err := cache.Create(dir, h, cache.WriterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range w.Todo() { // all of it; after a crash or damage, what is missing
		for i := r.First; i < r.End; i++ {
			if err := w.Add(i, teacher(i)); err != nil {
				log.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	r, err := cache.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	if err := r.Header().Compatible(h); err != nil {
		log.Fatal(err)
	}
	if err := r.Incomplete(); err != nil {
		log.Fatal(err)
	}
	e, err := r.Get(1)
	if err != nil {
		log.Fatal(err)
	}
	// The probabilities 0.7, 0.2 and 0.1 come back on the grid (FORMAT.md).
	fmt.Println("examples:", r.Len())
	fmt.Println("has:", e.TopK.Has)
	fmt.Printf("position 1: ids %v, p %.3f %.3f, tail %.3f\n", e.TopK.IDs[2:4],
		math.Exp(float64(e.TopK.LogProbs[2])), math.Exp(float64(e.TopK.LogProbs[3])), math.Exp(float64(e.Tail[1])))
	// Output:
	// examples: 2
	// has: [false true]
	// position 1: ids [8 3], p 0.709 0.197, tail 0.099
}
