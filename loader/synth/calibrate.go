package synth

import (
	"math"
)

// calibrate draws Config.CalibrationRows rows from a stream of their own
// (so the result does not depend on StartRow or Rows), then
//   - centres each component's first-order and pairwise terms and scales
//     them so that the pairwise term carries Config.Interaction of the
//     variance;
//   - whitens the components (Gram-Schmidt in the sample's covariance), so
//     that the shared and task-specific scores are uncorrelated with unit
//     variance and TaskCorrelation is the correlation of two tasks' scores;
//   - solves each binary target's bias by bisection so that the mean true
//     probability over the sample is the base rate.
func (g *Generator) calibrate() {
	k := g.nComp
	g.linMean, g.linW = make([]float64, k), make([]float64, k)
	g.fmMean, g.fmW = make([]float64, k), make([]float64, k)
	g.whiten = make([]float64, k*k)
	g.bias = make([]float64, len(g.targets))
	n := g.cfg.CalibrationRows
	active := !g.cfg.NoSignal && g.groups > 0
	var comps []float64 // n x k whitened scores
	if active {
		comps = g.calibrateScores(n)
	}
	for ti, c := range g.targets {
		if c.kind != kindBinary {
			continue
		}
		if !active {
			g.bias[ti] = math.Log(c.baseRate / (1 - c.baseRate))
			continue
		}
		f := make([]float64, n)
		for i := range f {
			f[i] = g.mixShared*comps[i*k] + g.mixOwn*comps[i*k+ti+1]
		}
		g.bias[ti] = solveBias(f, g.cfg.SignalScale, c.baseRate)
	}
}

func (g *Generator) calibrateScores(n int) []float64 {
	k := g.nComp
	key := hashKey(g.worldKey, "calibration")
	sc := g.newScratch()
	out := make([]*outCol, len(g.inputs))
	lin := make([]float64, n*k)
	fm := make([]float64, n*k)
	for i := 0; i < n; i++ {
		g.genInputs(g.rowSeed(key, int64(i)), i, out, sc)
		g.rawComponents(sc)
		copy(lin[i*k:(i+1)*k], sc.lin)
		copy(fm[i*k:(i+1)*k], sc.fm)
	}
	share := g.cfg.Interaction
	for c := 0; c < k; c++ {
		ml, sl := meanStd(lin, c, k)
		mf, sf := meanStd(fm, c, k)
		g.linMean[c], g.fmMean[c] = ml, mf
		// A term without variance (e.g. no pairs with a single input)
		// gives its share to the other.
		okL, okF := sl > 1e-12, sf > 1e-12
		switch {
		case okL && okF:
			g.linW[c] = math.Sqrt(1-share) / sl
			g.fmW[c] = math.Sqrt(share) / sf
		case okL:
			g.linW[c] = 1 / sl
		case okF:
			g.fmW[c] = 1 / sf
		}
	}
	x := make([]float64, n*k)
	for i := 0; i < n*k; i++ {
		c := i % k
		x[i] = g.linW[c]*(lin[i]-g.linMean[c]) + g.fmW[c]*(fm[i]-g.fmMean[c])
	}
	cov := make([]float64, k*k)
	for i := 0; i < n; i++ {
		row := x[i*k : (i+1)*k]
		for a := 0; a < k; a++ {
			for b := 0; b <= a; b++ {
				cov[a*k+b] += row[a] * row[b]
			}
		}
	}
	for a := 0; a < k; a++ {
		for b := 0; b <= a; b++ {
			cov[a*k+b] /= float64(n)
			cov[b*k+a] = cov[a*k+b]
		}
	}
	g.whiten = whitening(cov, k)
	e := make([]float64, n*k)
	for i := 0; i < n; i++ {
		for a := 0; a < k; a++ {
			var s float64
			for b := 0; b <= a; b++ {
				s += g.whiten[a*k+b] * x[i*k+b]
			}
			e[i*k+a] = s
		}
	}
	return e
}

// whitening returns the lower-triangular W (k x k, row-major) with
// W cov W^T = I, built by Gram-Schmidt in the inner product given by cov:
// component a is made uncorrelated with components 0..a-1. A component that
// is (almost) a combination of the earlier ones cannot be made independent;
// it is only scaled to unit variance, and one without variance is dropped.
func whitening(cov []float64, k int) []float64 {
	w := make([]float64, k*k)
	inner := func(p, q []float64) float64 {
		var s float64
		for i := 0; i < k; i++ {
			for j := 0; j < k; j++ {
				s += p[i] * cov[i*k+j] * q[j]
			}
		}
		return s
	}
	r := make([]float64, k)
	unit := make([]float64, k)
	for a := 0; a < k; a++ {
		for i := range unit {
			unit[i] = 0
		}
		unit[a] = 1
		copy(r, unit)
		for b := 0; b < a; b++ {
			wb := w[b*k : (b+1)*k]
			c := inner(unit, wb)
			for i := range r {
				r[i] -= c * wb[i]
			}
		}
		v := inner(r, r)
		own := cov[a*k+a]
		switch {
		case own <= 1e-12:
			// No variance: the component is zero.
		case v > 1e-6*own:
			s := 1 / math.Sqrt(v)
			for i := range r {
				w[a*k+i] = r[i] * s
			}
		default:
			w[a*k+a] = 1 / math.Sqrt(own)
		}
	}
	return w
}

func meanStd(x []float64, col, stride int) (mean, std float64) {
	n := len(x) / stride
	for i := 0; i < n; i++ {
		mean += x[i*stride+col]
	}
	mean /= float64(n)
	var ss float64
	for i := 0; i < n; i++ {
		d := x[i*stride+col] - mean
		ss += d * d
	}
	return mean, math.Sqrt(ss / float64(n))
}

// solveBias finds b with mean_i sigmoid(b + scale*f_i) = rate. The mean is
// strictly increasing in b, so Newton steps kept inside a shrinking bracket
// (bisection when a step leaves it) converge from any start.
func solveBias(f []float64, scale, rate float64) float64 {
	lo, hi := -60.0, 60.0
	b := math.Log(rate / (1 - rate))
	n := float64(len(f))
	for it := 0; it < 200; it++ {
		var m, dm float64
		for _, v := range f {
			p := sigmoid(b + scale*v)
			m += p
			dm += p * (1 - p)
		}
		m, dm = m/n-rate, dm/n
		if m < 0 {
			lo = b
		} else {
			hi = b
		}
		if math.Abs(m) <= 1e-12*rate || hi-lo < 1e-12 {
			break
		}
		next := b - m/dm
		if !(next > lo && next < hi) {
			next = (lo + hi) / 2
		}
		b = next
	}
	return b
}

// normCDF is the standard normal distribution function.
func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

func normPDF(x float64) float64 { return math.Exp(-0.5*x*x) / math.Sqrt(2*math.Pi) }

// expectObserved is E[y] for y = clip(round?(mu + noise*Z)), Z standard
// normal: the best possible prediction of a regression label, in closed form.
func expectObserved(mu float64, c *column) float64 {
	s := c.noise
	if s <= 0 {
		y := mu
		if c.roundInt {
			y = math.Round(y)
		}
		if c.clipBound {
			y = math.Min(math.Max(y, c.clipLo), c.clipHi)
		}
		return y
	}
	if c.roundInt && 18*s < 2000 {
		// Sum over the integers within 9 noise deviations (the mass
		// beyond is below 1e-18), folding the clipped tails onto the
		// domain bounds.
		kmin, kmax := math.Floor(mu-9*s), math.Ceil(mu+9*s)
		if c.clipBound {
			kmin, kmax = math.Max(kmin, c.clipLo), math.Min(kmax, c.clipHi)
			if kmin > kmax { // all mass beyond one bound
				if mu < c.clipLo {
					return c.clipLo
				}
				return c.clipHi
			}
		}
		var e float64
		for k := kmin; k <= kmax; k++ {
			lower, upper := normCDF((k-0.5-mu)/s), normCDF((k+0.5-mu)/s)
			if c.clipBound && k == c.clipLo {
				lower = 0
			}
			if c.clipBound && k == c.clipHi {
				upper = 1
			}
			e += k * (upper - lower)
		}
		return e
	}
	if !c.clipBound {
		// Unbounded: rounding of a wide distribution is symmetric noise.
		return mu
	}
	a, b := (c.clipLo-mu)/s, (c.clipHi-mu)/s
	pa, pb := normCDF(a), normCDF(b)
	return c.clipLo*pa + c.clipHi*(1-pb) + mu*(pb-pa) + s*(normPDF(a)-normPDF(b))
}
