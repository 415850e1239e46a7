package sim

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot draws the report into an SVG or PNG file (by its extension): on the
// left the trade-off, vCPU-hours (relative to the oracle) against overload
// time, one point per policy; on the right the timeline VM's demand and
// each policy's allocation.
func Plot(r *Report, path string) error {
	canvas, err := newCanvas(path, 13*vg.Inch, 5*vg.Inch)
	if err != nil {
		return err
	}
	trade, err := tradeOffPlot(r)
	if err != nil {
		return err
	}
	timeline, err := timelinePlot(r.Timeline)
	if err != nil {
		return err
	}
	plots := [][]*plot.Plot{{trade, timeline}}
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 2, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8,
		PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	dc := draw.New(canvas)
	for i, c := range plot.Align(plots, tiles, dc)[0] {
		plots[0][i].Draw(c)
	}
	return writeCanvas(canvas, path)
}

// newCanvas makes an SVG or PNG canvas, by the file's extension.
func newCanvas(path string, w, h vg.Length) (interface {
	vg.CanvasSizer
	io.WriterTo
}, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		return vgsvg.New(w, h), nil
	case ".png":
		return vgimg.PngCanvas{Canvas: vgimg.New(w, h)}, nil
	}
	return nil, fmt.Errorf("plot %s: want a .svg or .png file name", path)
}

func writeCanvas(canvas io.WriterTo, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}

// PlotSweep draws the frontiers of the sweep's total (all inputs, or the
// only one) into an SVG or PNG file: vCPU-hours ÷ the oracle's against
// overload time, one line per policy through its settings, the hindsight
// bounds and the yardstick dashed, and the matched levels as vertical
// lines.
func PlotSweep(r *SweepReport, path string) error {
	canvas, err := newCanvas(path, 9*vg.Inch, 6*vg.Inch)
	if err != nil {
		return err
	}
	g := r.Total()
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Frontiers: cost against risk (%s, %d VMs)", g.Name, g.VMs)
	p.X.Label.Text = "overload time (% of VM-time)"
	p.Y.Label.Text = "vCPU-hours ÷ oracle's"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	// Policies often reach far out (threshold at a high upper): draw up to
	// twice the highest level, where the comparison is.
	xMax := 0.0
	for _, l := range r.Levels {
		xMax = max(xMax, 2*100*l)
	}
	yMax := 0.0
	for i, f := range g.Frontiers {
		var xy plotter.XYs
		for _, pt := range f.Envelope() {
			xy = append(xy, plotter.XY{X: 100 * pt.OverloadTimeFraction, Y: pt.VsOracle})
		}
		if len(xy) == 0 {
			continue
		}
		for _, pt := range xy {
			if pt.X <= xMax {
				yMax = max(yMax, pt.Y)
			}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.LineStyle.Color = plotutil.Color(i)
		l.LineStyle.Width = vg.Points(1.5)
		p.Add(l)
		if f.Hindsight {
			l.LineStyle.Dashes = plotutil.Dashes(1)
		} else {
			sc, err := plotter.NewScatter(xy)
			if err != nil {
				return err
			}
			sc.GlyphStyle.Color = plotutil.Color(i)
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			sc.GlyphStyle.Radius = vg.Points(2)
			p.Add(sc)
		}
		p.Legend.Add(f.Policy, l)
	}
	for _, lv := range r.Levels {
		l, err := plotter.NewLine(plotter.XYs{{X: 100 * lv, Y: 0}, {X: 100 * lv, Y: 1e6}})
		if err != nil {
			return err
		}
		l.LineStyle.Width = vg.Points(0.5)
		l.LineStyle.Dashes = plotutil.Dashes(2)
		p.Add(l)
	}
	p.X.Min, p.X.Max = 0, xMax
	p.Y.Min, p.Y.Max = 1, max(yMax*1.05, 1.1)
	p.Draw(draw.New(canvas))
	return writeCanvas(canvas, path)
}

func tradeOffPlot(r *Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Cost and risk per policy (%d VMs)", r.VMs)
	p.X.Label.Text = "vCPU-hours ÷ oracle's"
	p.Y.Label.Text = "overload time (% of VM-time)"
	pts := plotter.XYLabels{}
	for _, x := range r.Results {
		pts.XYs = append(pts.XYs, plotter.XY{X: x.VsOracle, Y: 100 * x.OverloadTimeFraction})
		pts.Labels = append(pts.Labels, " "+x.Policy)
	}
	sc, err := plotter.NewScatter(pts.XYs)
	if err != nil {
		return nil, err
	}
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	sc.GlyphStyle.Radius = vg.Points(3)
	labels, err := plotter.NewLabels(pts)
	if err != nil {
		return nil, err
	}
	p.Add(plotter.NewGrid(), sc, labels)
	p.X.Min = 0
	p.Y.Min = 0
	// Room for the labels right of the rightmost point.
	p.X.Max *= 1.15
	return p, nil
}

func timelinePlot(t *Timeline) (*plot.Plot, error) {
	p := plot.New()
	p.X.Label.Text = "hours"
	p.Y.Label.Text = "CPUs"
	p.Legend.Top = true
	if t == nil {
		p.Title.Text = "no VM to show"
		return p, nil
	}
	p.Title.Text = "Demand and allocation of " + t.VM
	series := func(v []float64) plotter.XYs {
		xy := make(plotter.XYs, len(v))
		for i := range v {
			xy[i] = plotter.XY{X: t.Hours[i], Y: v[i]}
		}
		return xy
	}
	p.Add(plotter.NewGrid())
	top := 0.0
	for i, name := range t.Policies {
		l, err := plotter.NewLine(series(t.Alloc[i]))
		if err != nil {
			return nil, err
		}
		l.StepStyle = plotter.PostStep
		l.LineStyle.Color = plotutil.Color(i)
		l.LineStyle.Width = vg.Points(1)
		if i >= len(plotutil.DefaultColors) {
			l.LineStyle.Dashes = plotutil.Dashes(1 + i/len(plotutil.DefaultColors))
		}
		p.Add(l)
		p.Legend.Add(name, l)
		for _, v := range t.Alloc[i] {
			top = max(top, v)
		}
	}
	d, err := plotter.NewLine(series(t.Demand))
	if err != nil {
		return nil, err
	}
	d.StepStyle = plotter.PostStep
	d.LineStyle.Width = vg.Points(1.5)
	p.Add(d)
	p.Legend.Add("demand", d)
	for _, v := range t.Demand {
		top = max(top, v)
	}
	// Room above the lines for the legend.
	p.Y.Min, p.Y.Max = 0, 1.6*top
	return p, nil
}
