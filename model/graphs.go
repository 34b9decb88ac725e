package model

import (
	"fmt"
	"os"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// SetGraphLog sets where the model sends the line a backend with step
// graphs (runtime.StepGraphs, CUDA graphs) gives when a decode step's
// graphs are turned off and the steps run as usual; nil (the default)
// writes it to standard error.
func (m *Model) SetGraphLog(log func(line string)) { m.graphLog = log }

// beginGraph starts a step of kind key on a backend that records steps and
// replays them, and returns what ends it: called once after the step's last
// launch and before its read; later calls (a deferred one on an error path)
// do nothing. On other backends it does nothing.
func (m *Model) beginGraph(key string) (end func()) {
	sg, ok := m.be.(kdrt.StepGraphs)
	if !ok {
		return func() {}
	}
	sg.BeginGraph(key)
	done := false
	return func() {
		if done {
			return
		}
		done = true
		if note := sg.EndGraph(); note != "" {
			if m.graphLog != nil {
				m.graphLog(note)
			} else {
				fmt.Fprintln(os.Stderr, "kdnative:", note)
			}
		}
	}
}
