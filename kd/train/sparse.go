package train

import (
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// sparseTeacher uploads the data-carried teacher top-k of a batch's rows
// (T positions each). mask is 1 where a position has both a target and a
// teacher entry. ok is false when the rows carry no teacher.
func sparseTeacher(be kdrt.Backend, rows []data.Example, targets []int32, T int) (t loss.TeacherTopK, mask []float32, free func(), ok bool, err error) {
	ids, lps, tails, tm, K, err := data.MakeTopK(rows, T)
	if err != nil || K == 0 {
		return t, nil, func() {}, false, err
	}
	N := len(rows) * T
	mask = targetMask(targets)
	for i := range mask {
		mask[i] *= tm[i]
	}
	it, err := be.Alloc("teacher.topk.ids", kdrt.I32, N, K)
	if err != nil {
		return t, nil, func() {}, false, err
	}
	lt, err := be.Alloc("teacher.topk.logprobs", kdrt.F32, N, K)
	if err != nil {
		be.Free(it)
		return t, nil, func() {}, false, err
	}
	var tt *kdrt.Tensor
	if tails != nil {
		if tt, err = be.Alloc("teacher.topk.tail", kdrt.F32, N); err != nil {
			be.Free(it)
			be.Free(lt)
			return t, nil, func() {}, false, err
		}
	}
	free = func() {
		be.Free(it)
		be.Free(lt)
		if tt != nil {
			be.Free(tt)
		}
	}
	if err := be.UploadInt32(it, ids); err != nil {
		free()
		return t, nil, func() {}, false, err
	}
	if err := be.Upload(lt, lps); err != nil {
		free()
		return t, nil, func() {}, false, err
	}
	if tt != nil {
		if err := be.Upload(tt, tails); err != nil {
			free()
			return t, nil, func() {}, false, err
		}
	}
	return loss.TeacherTopK{IDs: it, LogProbs: lt, Tail: tt}, mask, free, true, nil
}

func anyTokens(mask []float32) bool {
	for _, m := range mask {
		if m != 0 {
			return true
		}
	}
	return false
}

// hasTopK reports whether any row carries a sparse teacher.
func hasTopK(rows []data.Example) bool {
	for _, r := range rows {
		if r.TopK != nil {
			return true
		}
	}
	return false
}
