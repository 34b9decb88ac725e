package model

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Option configures how New and LoadDir store a model.
type Option func(*options) error

type options struct {
	dtype  kdrt.DType
	master bool
}

func defaultOptions() options { return options{dtype: kdrt.F32} }

// Storage stores the weights and activations in dt: F32 (the default) or
// BF16 (mixed precision: products accumulate in float32, and gradients,
// statistics, logits and losses stay F32).
func Storage(dt kdrt.DType) Option {
	return func(o *options) error {
		if dt != kdrt.F32 && dt != kdrt.BF16 {
			return fmt.Errorf("model: storage %s: want F32 or BF16", dt)
		}
		o.dtype = dt
		return nil
	}
}

// MasterWeights keeps an F32 master copy of every weight stored in BF16,
// loaded from the checkpoint's own values (not from their bf16 rounding), for
// an optimizer to update (Param.Master). Without BF16 storage it does
// nothing: F32 weights are their own master.
func MasterWeights() Option {
	return func(o *options) error {
		o.master = true
		return nil
	}
}

// ForPrecision are the options of a model run at precision p: its storage,
// and for a model being trained (train) master weights.
func ForPrecision(p kdrt.Precision, train bool) []Option {
	opts := []Option{Storage(p.Storage())}
	if train {
		opts = append(opts, MasterWeights())
	}
	return opts
}

func applyOptions(opts []Option) (options, error) {
	o := defaultOptions()
	for _, f := range opts {
		if err := f(&o); err != nil {
			return o, err
		}
	}
	if o.dtype == kdrt.F32 {
		o.master = false
	}
	return o, nil
}

// DType is the storage dtype of the model's weights and activations.
func (m *Model) DType() kdrt.DType { return m.dt }
