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

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// plotLosses draws the training loss (blue) and the validation loss (red
// dots) of a metrics.jsonl as a PNG, steps across, loss up, on a light grid.
func plotLosses(metricsPath, pngPath string) error {
	f, err := os.Open(metricsPath)
	if err != nil {
		return err
	}
	defer f.Close()
	type pt struct{ x, y float64 }
	var train, val []pt
	valName := "validation loss"
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
		if rec.Loss != nil {
			train = append(train, pt{float64(rec.Step), *rec.Loss})
		}
		// The validation series that matches a distillation run is the KL to
		// the teacher; without a teacher it is the loss.
		if rec.Eval != nil && rec.Eval.KL != nil {
			val, valName = append(val, pt{float64(rec.Step), *rec.Eval.KL}), "validation KL to the teacher"
		} else if rec.Eval != nil && rec.Eval.Loss != nil && valName != "validation KL to the teacher" {
			val = append(val, pt{float64(rec.Step), *rec.Eval.Loss})
		}
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
