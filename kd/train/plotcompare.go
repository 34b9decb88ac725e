package train

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

// PlotRun is one run in PlotCompare: its metrics.jsonl and its label.
type PlotRun struct{ Label, Metrics string }

// runSeries are the curves of one metrics.jsonl: the training loss per
// logged step, the validation loss and the validation KL to the teacher
// per evaluation.
type runSeries struct {
	train, val, kl []plotPt
}

type plotPt struct{ x, y float64 }

func readRunSeries(path string) (runSeries, error) {
	var s runSeries
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Step int      `json:"step"`
			Loss *float64 `json:"loss"`
			Eval *struct {
				Loss *float64 `json:"loss"`
				KL   *float64 `json:"kl"`
			} `json:"eval"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		x := float64(rec.Step)
		if rec.Loss != nil {
			s.train = append(s.train, plotPt{x, *rec.Loss})
		}
		if rec.Eval != nil && rec.Eval.Loss != nil {
			s.val = append(s.val, plotPt{x, *rec.Eval.Loss})
		}
		if rec.Eval != nil && rec.Eval.KL != nil {
			s.kl = append(s.kl, plotPt{x, *rec.Eval.KL})
		}
	}
	return s, sc.Err()
}

// maxRelDiff is the largest |b − a|/|a| over the steps both series have.
func maxRelDiff(a, b []plotPt) (float64, bool) {
	at := map[float64]float64{}
	for _, p := range a {
		at[p.x] = p.y
	}
	worst, any := 0.0, false
	for _, p := range b {
		if y, ok := at[p.x]; ok && y != 0 {
			worst, any = math.Max(worst, math.Abs(p.y-y)/math.Abs(y)), true
		}
	}
	return worst, any
}

// PlotCompare draws runs side by side as one PNG, a panel per curve that
// every run has: the training loss (a line per run), the validation loss and
// the validation KL to the teacher (markers at each evaluation, joined).
// Each panel's title gives the largest relative difference of the later runs
// from the first at the steps they share; the first run is the reference
// (fp32, against bf16).
func PlotCompare(pngPath, title string, runs []PlotRun) error {
	if len(runs) == 0 {
		return errors.New("plot: no runs")
	}
	series := make([]runSeries, len(runs))
	for i, r := range runs {
		var err error
		if series[i], err = readRunSeries(r.Metrics); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	type panel struct {
		name string
		pick func(runSeries) []plotPt
		dots bool
	}
	var panels []panel
	for _, p := range []panel{
		{"training loss", func(s runSeries) []plotPt { return s.train }, false},
		{"validation loss", func(s runSeries) []plotPt { return s.val }, true},
		{"validation KL(teacher || student)", func(s runSeries) []plotPt { return s.kl }, true},
	} {
		ok := true
		for _, s := range series {
			ok = ok && len(p.pick(s)) > 0
		}
		if ok {
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		return fmt.Errorf("plot: the runs share no curve (%s)", runs[0].Metrics)
	}
	const W, panelH, pad, top = 800, 260, 44, 30
	H := top + panelH*len(panels)
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	colors := []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}}
	legend := title + ":"
	label(img, 8, 18, legend, color.Black)
	x := 16 + 7*len(legend)
	for i, r := range runs {
		c := colors[i%len(colors)]
		for dx := 0; dx < 16; dx++ {
			for dy := -1; dy <= 1; dy++ {
				img.Set(x+dx, 13+dy, c)
			}
		}
		label(img, x+20, 18, r.Label, c)
		x += 36 + 7*len(r.Label)
	}
	grid := color.RGBA{225, 225, 225, 255}
	for pi, p := range panels {
		y0 := top + pi*panelH
		minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
		for _, s := range series {
			for _, q := range p.pick(s) {
				minX, maxX = math.Min(minX, q.x), math.Max(maxX, q.x)
				minY, maxY = math.Min(minY, q.y), math.Max(maxY, q.y)
			}
		}
		if maxX == minX {
			maxX++
		}
		if maxY == minY {
			maxY++
		}
		px := func(q plotPt) (int, int) {
			return pad + int((q.x-minX)/(maxX-minX)*float64(W-2*pad)),
				y0 + panelH - pad + 8 - int((q.y-minY)/(maxY-minY)*float64(panelH-2*pad))
		}
		for i := 0; i <= 10; i++ {
			gx := pad + i*(W-2*pad)/10
			for j := y0 + pad - 8; j <= y0+panelH-pad+8; j++ {
				img.Set(gx, j, grid)
			}
		}
		for i := 0; i <= 4; i++ {
			gy := y0 + pad - 8 + i*(panelH-2*pad+16)/4
			for j := pad; j <= W-pad; j++ {
				img.Set(j, gy, grid)
			}
		}
		head := p.name
		for i := 1; i < len(series); i++ {
			if d, ok := maxRelDiff(p.pick(series[0]), p.pick(series[i])); ok {
				head += fmt.Sprintf("; %s at most %.2f%% from %s", runs[i].Label, 100*d, runs[0].Label)
			}
		}
		label(img, pad, y0+pad-16, head, color.Black)
		label(img, 2, y0+pad-4, fmt.Sprintf("%.3g", maxY), color.Black)
		label(img, 2, y0+panelH-pad+12, fmt.Sprintf("%.3g", minY), color.Black)
		label(img, pad, y0+panelH-pad+24, fmt.Sprintf("step %d", int(minX)), color.Black)
		end := fmt.Sprintf("step %d", int(maxX))
		label(img, W-pad-7*len(end), y0+panelH-pad+24, end, color.Black)
		for si, s := range series {
			c := colors[si%len(colors)]
			pts := p.pick(s)
			for i := 1; i < len(pts); i++ {
				xa, ya := px(pts[i-1])
				xb, yb := px(pts[i])
				line(img, xa, ya, xb, yb, c)
			}
			if p.dots {
				for _, q := range pts {
					cx, cy := px(q)
					for dx := -3; dx <= 3; dx++ {
						for dy := -3; dy <= 3; dy++ {
							if dx*dx+dy*dy <= 9 {
								img.Set(cx+dx, cy+dy, c)
							}
						}
					}
				}
			}
		}
	}
	out, err := os.Create(pngPath)
	if err != nil {
		return err
	}
	if err := png.Encode(out, img); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
