package layers

import (
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
)

// DotInteraction is the pairwise dot-product interaction of DLRM (Naumov
// et al., 2019), Merlin's DotProductInteraction with its defaults (no self
// interaction): for F vectors v_0..v_{F-1} of width Dim per row, stacked
// as one [B, F*Dim] matrix, it gives the F(F-1)/2 dot products <v_i, v_j>,
// i < j, in row-major order of the upper triangle: (0,1), (0,2), ...,
// (0,F-1), (1,2), ... It has no parameters.
type DotInteraction struct {
	F, Dim int
	dev    kernels.Device
}

// NewDotInteraction creates the interaction of f vectors of width dim.
func NewDotInteraction(dev kernels.Device, f, dim int) (*DotInteraction, error) {
	if f < 2 {
		return nil, fmt.Errorf("layers: dot interaction: needs at least 2 vectors to pair, got %d", f)
	}
	if dim <= 0 {
		return nil, fmt.Errorf("layers: dot interaction: vector width must be positive, got %d", dim)
	}
	return &DotInteraction{F: f, Dim: dim, dev: dev}, nil
}

// Out is the number of interactions per row, F(F-1)/2.
func (d *DotInteraction) Out() int { return d.F * (d.F - 1) / 2 }

// DotInteractionWS is the per-caller state of a DotInteraction.
type DotInteractionWS struct {
	z    *kernels.Tensor
	gram *batchBuf // [B, F*F]: every row's Gram matrix (its gradient in backward)
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (d *DotInteraction) NewWorkspace(maxRows int) *DotInteractionWS {
	return &DotInteractionWS{gram: newBatchBuf(d.dev, 1, maxRows, d.F*d.F)}
}

// Release frees the workspace.
func (ws *DotInteractionWS) Release() { ws.gram.release() }

// Forward writes the interactions of z [B, F*Dim] into out[:, col:col+Out()].
// z must stay unchanged until Backward.
func (d *DotInteraction) Forward(ws *DotInteractionWS, z, out *kernels.Tensor, col int) {
	B, F := z.Rows(), d.F
	ws.gram.resize(B)
	ws.z = z
	g := ws.gram.t()
	// G_b = Z_b Z_b^T with Z_b the [F, Dim] matrix of row b
	d.dev.GemmStridedBatched(false, true, F, F, d.Dim, 1, z, F*d.Dim, z, F*d.Dim, 0, g, F*F, B)
	for i := 0; i < F-1; i++ {
		d.dev.CopyCols(out, col, g, i*F+i+1, F-1-i, false)
		col += F - 1 - i
	}
}

// Backward turns the gradient w.r.t. the interactions, dout[:, col:col+Out()],
// into the gradient w.r.t. z, written into dz or added to it when accumulate
// is set: dZ_b = (dG_b + dG_b^T) Z_b with dG_b holding the pair gradients
// in its upper triangle and zeros elsewhere. It reuses the Gram buffer.
func (d *DotInteraction) Backward(ws *DotInteractionWS, dout *kernels.Tensor, col int, dz *kernels.Tensor, accumulate bool) {
	B, F, z := dout.Rows(), d.F, ws.z
	dg := ws.gram.t()
	d.dev.Zero(dg)
	for i := 0; i < F-1; i++ {
		d.dev.CopyCols(dg, i*F+i+1, dout, col, F-1-i, false)
		col += F - 1 - i
	}
	d.dev.GemmStridedBatched(false, false, F, d.Dim, F, 1, dg, F*F, z, F*d.Dim, beta(accumulate), dz, F*d.Dim, B)
	d.dev.GemmStridedBatched(true, false, F, d.Dim, F, 1, dg, F*F, z, F*d.Dim, 1, dz, F*d.Dim, B)
}
