package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartW      = 1100.0
	chartLeft   = 70.0
	chartRight  = 20.0
	chartTop    = 50.0
	rateH       = 240.0
	panelGap    = 45.0
	depthH      = 160.0
	legendLineH = 14.0
	legendCols  = 3
)

// chartSVG draws the sampled time series: events/s acknowledged and
// delivered (top, log scale) and queue depth (bottom, log scale), over bands
// numbered by measurement and listed below.
func chartSVG(r *Results) []byte {
	var b bytes.Buffer
	samples, segs := r.Samples, r.Segments
	tmax := 1.0
	for _, s := range samples {
		tmax = max(tmax, s.T)
	}
	for _, s := range segs {
		tmax = max(tmax, s.To)
	}
	plotW := chartW - chartLeft - chartRight
	x := func(t float64) float64 { return chartLeft + t/tmax*plotW }
	depthTop := chartTop + rateH + panelGap
	legendTop := depthTop + depthH + 45
	rows := (len(segs) + legendCols - 1) / legendCols
	height := legendTop + float64(rows+1)*legendLineH + 10

	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", chartW, height, chartW, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := fmt.Sprintf("hookbatch bench, %s: %s, %d cores, %s, relay %s", r.Machine.Date.Format("2006-01-02 15:04Z"), r.Machine.CPU, r.Machine.Cores, r.Machine.GoVersion, r.Relay)
	text(&b, chartLeft, 20, "start", 13, title)
	text(&b, chartLeft, 36, "start", 10, "sampled every 250 ms; bands are measurements (numbered below); figures are comparable only within this run")

	// Bands, in both panels.
	for i, s := range segs {
		to := s.To
		if to == 0 {
			to = tmax
		}
		fill := "#f3f3f3"
		if i%2 == 1 {
			fill = "#e4ecf7"
		}
		x0, x1 := x(s.From), x(to)
		for _, p := range [][2]float64{{chartTop, rateH}, {depthTop, depthH}} {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x0, p[0], max(x1-x0, 0.5), p[1], fill)
		}
		if x1-x0 >= 9 {
			text(&b, (x0+x1)/2, chartTop+11, "middle", 9, fmt.Sprint(i+1))
		}
	}

	// Rates.
	lo, hi := logRange(func(yield func(float64)) {
		for _, s := range samples {
			yield(s.IngestedPerSec)
			yield(s.DeliveredPerSec)
		}
	}, 10)
	yRate := logScale(lo, hi, chartTop, rateH)
	axes(&b, "events/s (log)", chartTop, rateH, lo, hi, yRate, tmax, x)
	series(&b, samples, x, yRate, 1, "#1f77b4", func(s Sample) float64 { return s.IngestedPerSec })
	series(&b, samples, x, yRate, 1, "#ff7f0e", func(s Sample) float64 { return s.DeliveredPerSec })
	legendItem(&b, chartW-chartRight-300, chartTop-8, "#1f77b4", "acknowledged (ingest)")
	legendItem(&b, chartW-chartRight-150, chartTop-8, "#ff7f0e", "delivered (sinks)")

	// Queue depth.
	dlo, dhi := logRange(func(yield func(float64)) {
		for _, s := range samples {
			yield(float64(s.QueueDepth))
		}
	}, 1)
	yDepth := logScale(dlo, dhi, depthTop, depthH)
	axes(&b, "queued events (log)", depthTop, depthH, dlo, dhi, yDepth, tmax, x)
	series(&b, samples, x, yDepth, 0, "#2ca02c", func(s Sample) float64 { return float64(s.QueueDepth) })
	legendItem(&b, chartW-chartRight-150, depthTop-8, "#2ca02c", "queue depth")
	text(&b, chartLeft+plotW/2, depthTop+depthH+32, "middle", 11, "time since start (s)")

	// Measurements.
	colW := plotW / legendCols
	for i, s := range segs {
		col, row := i/max(rows, 1), i%max(rows, 1)
		label := strings.TrimPrefix(s.Scenario, "hookbatch ")
		if len(label) > 58 {
			label = label[:57] + "…"
		}
		text(&b, chartLeft+float64(col)*colW, legendTop+float64(row)*legendLineH, "start", 10, fmt.Sprintf("%d. %s", i+1, label))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// logRange returns decades around the positive values, the lowest at least
// floor.
func logRange(values func(func(float64)), floor float64) (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	values(func(v float64) {
		if v >= floor {
			lo, hi = min(lo, v), max(hi, v)
		}
	})
	if hi == 0 {
		return floor, floor * 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	return lo, hi
}

func logScale(lo, hi, top, h float64) func(float64) float64 {
	l, span := math.Log10(lo), math.Log10(hi)-math.Log10(lo)
	return func(v float64) float64 {
		v = min(max(v, lo), hi)
		return top + h - (math.Log10(v)-l)/span*h
	}
}

func axes(b *bytes.Buffer, label string, top, h, lo, hi float64, y func(float64) float64, tmax float64, x func(float64) float64) {
	right := chartW - chartRight
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", chartLeft, top, right-chartLeft, h)
	for v := lo; v <= hi*1.0001; v *= 10 {
		yy := y(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ccc" stroke-dasharray="2,3"/>`+"\n", chartLeft, yy, right, yy)
		text(b, chartLeft-5, yy+4, "end", 10, siNumber(v))
	}
	step := niceStep(tmax / 10)
	for t := 0.0; t <= tmax; t += step {
		xx := x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/>`+"\n", xx, top+h, xx, top+h+4)
		text(b, xx, top+h+15, "middle", 10, fmt.Sprintf("%g", t))
	}
	fmt.Fprintf(b, `<text x="14" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`+"\n", top+h/2, top+h/2, esc(label))
}

// series draws one polyline per run of samples whose value is at least
// floor (a sample below it, such as an unknown depth or a rate of zero
// between measurements, breaks the line).
func series(b *bytes.Buffer, samples []Sample, x, y func(float64) float64, floor float64, color string, v func(Sample) float64) {
	var pts []string
	flush := func() {
		if len(pts) > 1 {
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for _, s := range samples {
		val := v(s)
		if val < floor {
			flush()
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.T), y(val)))
	}
	flush()
}

func legendItem(b *bytes.Buffer, x, y float64, color, label string) {
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", x, y-4, x+18, y-4, color)
	text(b, x+22, y, "start", 10, label)
}

func text(b *bytes.Buffer, x, y float64, anchor string, size int, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s">%s</text>`+"\n", x, y, size, anchor, esc(s))
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func siNumber(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%gG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}
