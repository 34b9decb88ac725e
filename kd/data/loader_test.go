package data

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
)

func TestMakeBatch(t *testing.T) {
	rows := []Example{
		{Tokens: []int32{1, 2, 3, 4}, Labels: []int32{IgnoreIndex, IgnoreIndex, 3, 4}},
		{Tokens: []int32{5, 6}, Labels: []int32{5, 6}},
		{Tokens: []int32{7}, Labels: []int32{7}},
	}
	b, err := MakeBatch(rows, 99, 0)
	if err != nil {
		t.Fatal(err)
	}
	const I = IgnoreIndex
	want := model.Batch{B: 3, T: 4,
		IDs:     []int32{1, 2, 3, 4, 5, 6, 99, 99, 7, 99, 99, 99},
		Targets: []int32{I, 3, 4, I, 6, I, I, I, I, I, I, I},
	}
	if b.B != want.B || b.T != want.T || !slices.Equal(b.IDs, want.IDs) || !slices.Equal(b.Targets, want.Targets) || b.Positions != nil {
		t.Fatalf("batch %+v\nwant %+v", b, want)
	}
	b, err = MakeBatch(rows, 0, 6)
	if err != nil || b.T != 6 || len(b.IDs) != 18 || b.Targets[4] != I || b.Targets[5] != I {
		t.Fatalf("fixed T: %+v %v", b, err)
	}
	if _, err := MakeBatch(rows, 0, 3); err == nil {
		t.Fatal("a row longer than the fixed T was accepted")
	}
	if _, err := MakeBatch(nil, 0, 0); err == nil {
		t.Fatal("an empty batch was accepted")
	}
}

// rowsN makes n distinct rows of varying length.
func rowsN(n int) []Example {
	rows := make([]Example, n)
	for i := range rows {
		l := 2 + i%5
		rows[i].Tokens = make([]int32, l)
		rows[i].Labels = make([]int32, l)
		for j := range l {
			rows[i].Tokens[j] = int32(i*10 + j)
			rows[i].Labels[j] = int32(i*10 + j)
		}
		rows[i].Labels[0] = IgnoreIndex
	}
	return rows
}

// firstIDs returns the first token of each row of a batch: the row's id.
func firstIDs(b model.Batch) []int32 {
	out := make([]int32, b.B)
	for i := range out {
		out[i] = b.IDs[i*b.T] / 10
	}
	return out
}

func take(t *testing.T, l *Loader, k, b int) []model.Batch {
	t.Helper()
	out := make([]model.Batch, k)
	for i := range out {
		var err error
		if out[i], err = l.Next(b); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func batchEqual(a, b model.Batch) bool {
	return a.B == b.B && a.T == b.T && slices.Equal(a.IDs, b.IDs) && slices.Equal(a.Targets, b.Targets)
}

func TestLoaderEpochsAreSeededPermutations(t *testing.T) {
	const n, B = 10, 5
	rows := rowsN(n)
	order := func(seed uint64, epochs int) [][]int32 {
		l, err := NewLoader(rows, LoaderConfig{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]int32
		for range epochs {
			var ep []int32
			for range n / B {
				if l.Epoch() != len(out) {
					t.Fatalf("epoch %d, want %d", l.Epoch(), len(out))
				}
				b, err := l.Next(B)
				if err != nil {
					t.Fatal(err)
				}
				ep = append(ep, firstIDs(b)...)
			}
			out = append(out, ep)
		}
		return out
	}
	a, a2, c := order(7, 3), order(7, 3), order(8, 3)
	for e, ep := range a {
		s := slices.Clone(ep)
		slices.Sort(s)
		for i := range s {
			if s[i] != int32(i) {
				t.Fatalf("epoch %d is not a permutation: %v", e, ep)
			}
		}
		if !slices.Equal(ep, a2[e]) {
			t.Fatalf("epoch %d differs for the same seed", e)
		}
	}
	if slices.Equal(a[0], a[1]) && slices.Equal(a[1], a[2]) {
		t.Fatal("every epoch has the same order")
	}
	if slices.Equal(a[0], c[0]) && slices.Equal(a[1], c[1]) {
		t.Fatal("seeds 7 and 8 give the same order")
	}
	// The first epoch of seed 7 is pinned, so a change of generator (which
	// would break resuming old checkpoints) shows.
	if want := []int32{6, 5, 1, 4, 2, 8, 3, 7, 0, 9}; !slices.Equal(a[0], want) {
		t.Fatalf("the seeded order changed: %v, want %v", a[0], want)
	}
	// NoShuffle keeps the given order.
	l, _ := NewLoader(rows, LoaderConfig{NoShuffle: true})
	b := take(t, l, 1, n)[0]
	if got := firstIDs(b); !slices.Equal(got, []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("unshuffled order %v", got)
	}
}

func TestLoaderResume(t *testing.T) {
	rows := rowsN(13)
	const B, k, more = 4, 5, 9 // batches cross epoch boundaries (13 rows, B 4)
	ref, err := NewLoader(rows, LoaderConfig{Seed: 42, PadID: 0})
	if err != nil {
		t.Fatal(err)
	}
	all := take(t, ref, k+more, B)

	l, _ := NewLoader(rows, LoaderConfig{Seed: 42})
	take(t, l, k, B)
	st := l.State()
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back LoaderState
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	// A new loader, configured with another seed: the state's seed wins.
	r, _ := NewLoader(rows, LoaderConfig{Seed: 1})
	if err := r.Restore(back); err != nil {
		t.Fatal(err)
	}
	for i, b := range take(t, r, more, B) {
		if !batchEqual(b, all[k+i]) {
			t.Fatalf("batch %d after resume differs:\n%v\nwant\n%v", k+i, b.IDs, all[k+i].IDs)
		}
	}
	if r.Epoch() != ref.Epoch() || r.State() != ref.State() {
		t.Fatalf("state after resume %+v, uninterrupted %+v", r.State(), ref.State())
	}
	// Restoring onto other data fails.
	other := rowsN(13)
	other[3].Tokens[1]++
	o, _ := NewLoader(other, LoaderConfig{Seed: 42})
	if err := o.Restore(back); err == nil || !strings.Contains(err.Error(), "data changed") {
		t.Fatalf("restore onto changed data: %v", err)
	}
	short, _ := NewLoader(rows[:12], LoaderConfig{Seed: 42})
	if err := short.Restore(back); err == nil {
		t.Fatal("restore onto fewer rows succeeded")
	}
	bad := back
	bad.Position = 99
	if err := r.Restore(bad); err == nil {
		t.Fatal("restore at an impossible position succeeded")
	}
}

func TestPairLoader(t *testing.T) {
	pairs := []Pair{
		{Prompt: []int32{1, 2}, Chosen: []int32{3, 4}, Rejected: []int32{5}},
		{Prompt: []int32{6}, Chosen: []int32{7}, Rejected: []int32{8, 9, 10}},
	}
	b, err := MakePairBatch(pairs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	const I = IgnoreIndex
	wantIDs := []int32{1, 2, 3, 4, 6, 7, 0, 0, 1, 2, 5, 0, 6, 8, 9, 10}
	wantTg := []int32{I, 3, 4, I, 7, I, I, I, I, 5, I, I, 8, 9, 10, I}
	if b.B != 4 || b.T != 4 || !slices.Equal(b.IDs, wantIDs) || !slices.Equal(b.Targets, wantTg) {
		t.Fatalf("pair batch %+v", b)
	}
	l, err := NewPairLoader(pairs, LoaderConfig{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := l.Next(3)
	st := l.State()
	y, _ := l.Next(2)
	l2, _ := NewPairLoader(pairs, LoaderConfig{Seed: 3})
	if err := l2.Restore(st); err != nil {
		t.Fatal(err)
	}
	y2, _ := l2.Next(2)
	if x.B != 6 || !batchEqual(y, y2) {
		t.Fatalf("pair loader resume: %v vs %v", y.IDs, y2.IDs)
	}
}

func TestLoaderRejects(t *testing.T) {
	if _, err := NewLoader(nil, LoaderConfig{}); err == nil {
		t.Error("empty loader")
	}
	if _, err := NewLoader([]Example{{Tokens: []int32{1}, Labels: nil}}, LoaderConfig{}); err == nil {
		t.Error("labels of the wrong length")
	}
	if _, err := NewLoader(rowsN(3), LoaderConfig{FixedT: 2}); err == nil {
		t.Error("rows longer than FixedT")
	}
	l, _ := NewLoader(rowsN(3), LoaderConfig{})
	if _, err := l.Next(0); err == nil {
		t.Error("a batch of 0 rows")
	}
}

// TestLoadToBatchEndToEnd follows one chat line from JSONL to the targets
// the model sees: the targets are the assistant tokens, shifted.
func TestLoadToBatchEndToEnd(t *testing.T) {
	p := writeFile(t, "e.jsonl", `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "ab"}]}`+"\n")
	tok := newFake(plainChatML, false)
	train, _, _, err := LoadSFT(p, tok, Options{MaxLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLoader(train, LoaderConfig{PadID: 256})
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Next(2) // one row, served twice across epochs
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for i := 0; i < b.T; i++ {
		if tg := b.Targets[i]; tg != IgnoreIndex {
			got = append(got, tg)
		}
	}
	if want := cat(bytesOf("ab"), []int32{258}, bytesOf("\n")); !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	// The position before "a" (the header's "\n") predicts "a".
	i := 0
	for b.IDs[i] != 'a' || b.IDs[i+1] != 'b' {
		i++
	}
	if b.Targets[i-1] != 'a' || b.IDs[i-1] != '\n' {
		t.Fatalf("target at %d is %d", i-1, b.Targets[i-1])
	}
}
