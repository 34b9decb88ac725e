package model

import kdrt "github.com/kdnative/kdnative/runtime"

// SetGraphLog sets where the model sends the line a backend with step
// graphs (runtime.StepGraphs, CUDA graphs) gives when a decode step's
// graphs are turned off and the steps run as usual; nil (the default)
// writes it to standard error.
func (m *Model) SetGraphLog(log func(line string)) { m.graphLog = log }

// beginGraph starts a decode step of kind key (runtime.BeginGraph).
func (m *Model) beginGraph(key string) (end func()) { return kdrt.BeginGraph(m.be, key, m.graphLog) }
