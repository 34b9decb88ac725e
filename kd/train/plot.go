package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"sort"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// plotLosses draws the training loss (blue) and the validation loss (red
// dots) of a metrics.jsonl as a PNG, steps across, loss up, on a light grid.
func plotLosses(metricsPath, pngPath string) error {
	s, err := readRunSeries(metricsPath)
	if err != nil {
		return err
	}
	type pt = plotPt
	train, val := s.train, s.val
	valName := "validation loss"
	// The validation series that matches a distillation run is the KL to
	// the teacher; without a teacher it is the loss.
	if len(s.kl) > 0 {
		val, valName = s.kl, "validation KL to the teacher"
	}
	const W, H, pad = 800, 480, 40
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	all := append(append([]pt(nil), train...), val...)
	if len(all) == 0 {
		return nil
	}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range all {
		minX, maxX = math.Min(minX, p.x), math.Max(maxX, p.x)
		minY, maxY = math.Min(minY, p.y), math.Max(maxY, p.y)
	}
	if maxX == minX {
		maxX++
	}
	if maxY == minY {
		maxY++
	}
	px := func(p pt) (int, int) {
		return pad + int((p.x-minX)/(maxX-minX)*float64(W-2*pad)), H - pad - int((p.y-minY)/(maxY-minY)*float64(H-2*pad))
	}
	grid := color.RGBA{225, 225, 225, 255}
	for i := 0; i <= 10; i++ {
		x, y := pad+i*(W-2*pad)/10, pad+i*(H-2*pad)/10
		for j := pad; j <= H-pad; j++ {
			img.Set(x, j, grid)
		}
		for j := pad; j <= W-pad; j++ {
			img.Set(j, y, grid)
		}
	}
	blue, red := color.RGBA{31, 119, 180, 255}, color.RGBA{214, 39, 40, 255}
	for i := 1; i < len(train); i++ {
		x0, y0 := px(train[i-1])
		x1, y1 := px(train[i])
		line(img, x0, y0, x1, y1, blue)
	}
	for _, p := range val {
		x, y := px(p)
		for dx := -3; dx <= 3; dx++ {
			for dy := -3; dy <= 3; dy++ {
				if dx*dx+dy*dy <= 9 {
					img.Set(x+dx, y+dy, red)
				}
			}
		}
	}
	// Labels: what is drawn, and the ranges of both axes.
	label(img, pad, 24, "training loss (blue), "+valName+" (red dots)", color.Black)
	label(img, 4, pad+4, fmt.Sprintf("%.3g", maxY), color.Black)
	label(img, 4, H-pad, fmt.Sprintf("%.3g", minY), color.Black)
	label(img, pad, H-pad+18, fmt.Sprintf("step %d", int(minX)), color.Black)
	end := fmt.Sprintf("step %d", int(maxX))
	label(img, W-pad-7*len(end), H-pad+18, end, color.Black)
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

// line draws with Bresenham's algorithm.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// label writes text with its baseline at (x, y) in a 7×13 bitmap font.
func label(img *image.RGBA, x, y int, text string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(text)
}

// plotTasks draws the eval_tasks' metrics of a metrics.jsonl as a PNG: a
// panel per task (in the order they first appear), steps across, one line
// per metric with its 95% interval as a bar at each evaluation. Word
// perplexity is left out (its scale would flatten the bits beside it).
func plotTasks(metricsPath, pngPath string) error {
	f, err := os.Open(metricsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	type pt struct{ x, y, lo, hi float64 }
	type series struct {
		name string
		pts  []pt
	}
	var taskNames []string
	byTask := map[string][]*series{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Step  int `json:"step"`
			Tasks map[string]map[string]struct {
				Value float64 `json:"value"`
				Lo    float64 `json:"ci_lo"`
				Hi    float64 `json:"ci_hi"`
			} `json:"tasks"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Tasks == nil {
			continue
		}
		names := make([]string, 0, len(rec.Tasks))
		for name := range rec.Tasks {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if _, ok := byTask[name]; !ok {
				taskNames = append(taskNames, name)
				byTask[name] = nil
			}
			metrics := make([]string, 0, len(rec.Tasks[name]))
			for m := range rec.Tasks[name] {
				metrics = append(metrics, m)
			}
			sort.Strings(metrics)
			for _, m := range metrics {
				v := rec.Tasks[name][m]
				if m == "word_perplexity" || math.IsNaN(v.Value) {
					continue
				}
				var s *series
				for _, old := range byTask[name] {
					if old.name == m {
						s = old
					}
				}
				if s == nil {
					s = &series{name: m}
					byTask[name] = append(byTask[name], s)
				}
				s.pts = append(s.pts, pt{float64(rec.Step), v.Value, v.Lo, v.Hi})
			}
		}
	}
	if len(taskNames) == 0 {
		return nil
	}
	const W, panelH, pad = 800, 240, 40
	H := panelH * len(taskNames)
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	colors := []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}, {255, 127, 14, 255}}
	grid := color.RGBA{225, 225, 225, 255}
	for ti, name := range taskNames {
		top := ti * panelH
		minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
		for _, s := range byTask[name] {
			for _, p := range s.pts {
				minX, maxX = math.Min(minX, p.x), math.Max(maxX, p.x)
				for _, y := range []float64{p.y, p.lo, p.hi} {
					if !math.IsNaN(y) {
						minY, maxY = math.Min(minY, y), math.Max(maxY, y)
					}
				}
			}
		}
		if math.IsInf(minX, 0) {
			continue
		}
		if maxX == minX {
			maxX++
		}
		if maxY == minY {
			maxY++
		}
		px := func(x, y float64) (int, int) {
			return pad + int((x-minX)/(maxX-minX)*float64(W-2*pad)),
				top + panelH - pad + 8 - int((y-minY)/(maxY-minY)*float64(panelH-2*pad))
		}
		for i := 0; i <= 10; i++ {
			x := pad + i*(W-2*pad)/10
			for j := top + pad + 8; j <= top+panelH-pad+8; j++ {
				img.Set(x, j, grid)
			}
		}
		for i := 0; i <= 4; i++ {
			y := top + pad + 8 + i*(panelH-2*pad)/4
			for j := pad; j <= W-pad; j++ {
				img.Set(j, y, grid)
			}
		}
		legend := name + ":"
		for si, s := range byTask[name] {
			c := colors[si%len(colors)]
			for i, p := range s.pts {
				x, y := px(p.x, p.y)
				if !math.IsNaN(p.lo) && !math.IsNaN(p.hi) {
					_, ylo := px(p.x, p.lo)
					_, yhi := px(p.x, p.hi)
					line(img, x, ylo, x, yhi, c)
					line(img, x-3, ylo, x+3, ylo, c)
					line(img, x-3, yhi, x+3, yhi, c)
				}
				if i > 0 {
					x0, y0 := px(s.pts[i-1].x, s.pts[i-1].y)
					line(img, x0, y0, x, y, c)
				}
			}
			legend += " " + s.name
			label(img, pad+7*len(legend)-7*len(s.name), top+24, s.name, c)
		}
		label(img, pad, top+24, name+":", color.Black)
		label(img, 4, top+pad+12, fmt.Sprintf("%.3g", maxY), color.Black)
		label(img, 4, top+panelH-pad+8, fmt.Sprintf("%.3g", minY), color.Black)
		label(img, pad, top+panelH-8, fmt.Sprintf("step %d", int(minX)), color.Black)
		end := fmt.Sprintf("step %d (bars: 95%% intervals)", int(maxX))
		label(img, W-pad-7*len(end), top+panelH-8, end, color.Black)
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
