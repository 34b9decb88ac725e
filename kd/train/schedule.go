package train

import "math"

// LR returns the learning rate of optimizer step (1-based) under the
// schedule: linear warmup from 0 over WarmupSteps, then cosine or linear decay
// from lr to MinLRRatio·lr at totalSteps, or constant — the shapes of
// transformers' get_cosine_schedule_with_warmup and
// get_linear_schedule_with_warmup (with a floor).
func (s ScheduleRecipe) LR(lr float64, step, totalSteps int) float64 {
	if s.WarmupSteps > 0 && step <= s.WarmupSteps {
		return lr * float64(step) / float64(s.WarmupSteps)
	}
	if s.Kind == "constant" || totalSteps <= s.WarmupSteps {
		return lr
	}
	progress := float64(step-s.WarmupSteps) / float64(totalSteps-s.WarmupSteps)
	progress = math.Min(1, math.Max(0, progress))
	var f float64
	switch s.Kind {
	case "linear":
		f = 1 - progress
	default: // cosine
		f = 0.5 * (1 + math.Cos(math.Pi*progress))
	}
	return lr * (s.MinLRRatio + (1-s.MinLRRatio)*f)
}
