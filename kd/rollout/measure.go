package rollout

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// ReverseKLOnSamples measures how far a student is from its teacher where
// the student goes: the student (through s, which samples with student)
// answers the prompts with p and seeds, and the mean over the sampled
// tokens' positions of KL(student ‖ teacher) is returned, in nats per
// token — over the whole vocabulary when teacher is a local model
// (student and teacher distributions at temperature 1, on the shared ids),
// else the Monte-Carlo estimate mean(log π(y) − log p_teacher(y)) of the
// sampled tokens y from scorer. Also returned: the number of tokens and
// the samples.
func ReverseKLOnSamples(ctx context.Context, s *Sampler, student, teacher *model.Model, scorer Scorer, prompts [][]int32, seeds []uint64, p Params, pad int32, opt loss.Options) (float64, int, []Rollout, error) {
	if teacher == nil && scorer == nil {
		return 0, 0, nil, errors.New("rollout: reverse KL needs a teacher or a scorer")
	}
	rs, err := s.Sample(ctx, prompts, seeds, p)
	if err != nil {
		return 0, 0, nil, err
	}
	b, err := MakeBatch(rs, pad, 0)
	if err != nil {
		return 0, 0, nil, err
	}
	mask := make([]float32, len(b.Targets))
	n := 0
	for i, t := range b.Targets {
		if t != kdrt.IgnoreIndex {
			mask[i] = 1
			n++
		}
	}
	if teacher != nil {
		th, err := teacher.InferHidden(b.Batch)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("teacher: %w", err)
		}
		h, err := student.InferHidden(b.Batch)
		if err != nil {
			return 0, 0, nil, err
		}
		res, err := loss.KD(student.Backend(), h, loss.Head{W: student.Head().W}, nil, loss.TeacherHidden{Hidden: th, Head: teacher.Head().W}, mask,
			loss.KDConfig{Divergence: kdrt.ReverseKL, Temperature: 1, NoTSquared: true, Tail: kdrt.TailBucket}, 1, opt)
		if err != nil {
			return 0, 0, nil, err
		}
		return res.Loss, res.Tokens, rs, nil
	}
	scores, err := scorer.Score(ctx, b.Sequences())
	if err != nil {
		return 0, 0, nil, err
	}
	lt, err := b.Scatter(scores)
	if err != nil {
		return 0, 0, nil, err
	}
	h, err := student.InferHidden(b.Batch)
	if err != nil {
		return 0, 0, nil, err
	}
	ls, err := loss.TokenLogProbs(student.Backend(), h, loss.Head{W: student.Head().W}, b.Targets, opt)
	if err != nil {
		return 0, 0, nil, err
	}
	var sum float64
	for i := range b.Targets {
		if mask[i] != 0 {
			sum += ls[i] - lt[i]
		}
	}
	return sum / float64(n), n, rs, nil
}
