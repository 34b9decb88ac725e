package train

import (
	"fmt"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
)

// setupFeatures reads the feature term: the layer map, the loss, and the
// learned projections (added to the optimizer's slots).
func (t *trainer) setupFeatures() error {
	f := t.r.Objectives.Feature
	spec := f.Layers
	if spec == "" {
		spec = "auto"
	}
	sc, tc := t.student.Config, t.teacher.Config
	pairs, err := loss.ParseLayerMap(spec, sc.Layers, tc.Layers)
	if err != nil {
		return fmt.Errorf("objectives.feature.layers: %w", err)
	}
	kind := f.Loss
	if kind == "relation" {
		kind = loss.FeatureMSE // validated as a feature loss; RelationLoss is used instead
	}
	t.feat = loss.FeatureConfig{Loss: kind, Project: f.Project, LayerMap: pairs}
	if err := t.feat.Validate(sc.Layers, tc.Layers); err != nil {
		return fmt.Errorf("objectives.feature: %w", err)
	}
	for _, p := range pairs {
		t.teacherKeep = append(t.teacherKeep, p.Teacher)
	}
	if f.Loss == "relation" {
		return nil // similarity matrices need no projection
	}
	if t.projs, err = loss.NewProjections(t.be, t.feat, sc.Hidden, tc.Hidden, t.r.Seed); err != nil {
		return err
	}
	for _, p := range t.projs {
		if p != nil {
			t.slots = append(t.slots, p.Slots()...)
		}
	}
	return nil
}

// featureLosses computes the feature (or relation) term for every mapped
// pair of hidden states of the last forward passes, weighted by scale and
// shared equally among the pairs, and returns the gradients at the student's
// hidden states for BackwardHidden.
func (t *trainer) featureLosses(b model.Batch, scale float64) ([]model.HiddenGrad, float64, error) {
	mask := targetMask(b.Targets)
	if !anyTokens(mask) {
		return nil, 0, nil
	}
	relation := t.r.Objectives.Feature.Loss == "relation"
	each := scale / float64(len(t.feat.LayerMap))
	var extra []model.HiddenGrad
	var total float64
	for i, p := range t.feat.LayerMap {
		hs, err := t.student.Hidden(p.Student)
		if err != nil {
			return extra, 0, err
		}
		ht, err := t.teacher.Hidden(p.Teacher)
		if err != nil {
			return extra, 0, err
		}
		g, err := t.be.Alloc("grad.feature", hs.DType, hs.Shape...)
		if err != nil {
			return extra, 0, err
		}
		extra = append(extra, model.HiddenGrad{Index: p.Student, Grad: g})
		var res loss.FeatureResult
		if relation {
			res, err = loss.RelationLoss(t.be, hs, g, ht, b.B, b.T, mask, each)
		} else {
			res, err = loss.FeatureLoss(t.be, hs, g, ht, t.projs[i], mask, t.feat, each)
		}
		if err != nil {
			return extra, 0, fmt.Errorf("feature %d:%d: %w", p.Student, p.Teacher, err)
		}
		total += res.Loss
	}
	return extra, total, nil
}
