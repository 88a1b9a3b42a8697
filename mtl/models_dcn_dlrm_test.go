package mtl

import (
	"fmt"

	"github.com/mtlrank/mtlrank/schema"
)

// dcnDLRM is the reference body of dcn and dlrm on one input row x (the
// input block's output), from the equations:
//
// dcn: x_{l+1} = x0 * (x_l W_l + b_l) + x_l for DCNInteractedLayerNum
// layers ("dcn/cross/<l>"), then the MLP "dcn/mlp" (Merlin's DCNModel,
// stacked).
//
// dlrm: the categorical features' embeddings (each EmbeddingsDim wide) and,
// with continuous features, h = act(cont W + b) ("dlrm/bottom/0") form the
// vectors v_0..v_{F-1}, in input order with h last; the top MLP "dlrm/top"
// reads [h, <v_i, v_j> for i < j in row-major order].
func (r *refNet) dcnDLRM(x []float64) []float64 {
	if r.cfg.Model == "dcn" {
		x0, xl := x, x
		for l := range r.cfg.DCNInteractedLayerNum {
			u := r.dense(fmt.Sprintf("dcn/cross/%d", l), xl, true)
			next := make([]float64, len(x0))
			for j := range next {
				next[j] = x0[j]*u[j] + xl[j]
			}
			xl = next
		}
		return r.mlp("dcn/mlp", len(r.cfg.MLPLayers), xl)
	}
	var vecs [][]float64
	var cont []float64
	col := 0
	for _, f := range r.inputFeatures() {
		if !f.HasTag(schema.TagCategorical) {
			cont = append(cont, x[col])
			col++
			continue
		}
		dim := r.param("input/emb/" + f.DomainName()).shape[1]
		if dim != r.cfg.EmbeddingsDim {
			r.t.Fatalf("reference: %s has embeddings of width %d, not embeddings_dim %d", f.Name, dim, r.cfg.EmbeddingsDim)
		}
		vecs = append(vecs, x[col:col+dim])
		col += dim
	}
	var top []float64
	if len(cont) > 0 {
		h := r.mlp("dlrm/bottom", 1, cont)
		vecs = append(vecs, h)
		top = append(top, h...)
	}
	for i := range vecs {
		for j := i + 1; j < len(vecs); j++ {
			s := 0.0
			for k := range vecs[i] {
				s += vecs[i][k] * vecs[j][k]
			}
			top = append(top, s)
		}
	}
	return r.mlp("dlrm/top", len(r.cfg.MLPLayers), top)
}
