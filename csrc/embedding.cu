// embedding.cu - embedding gather with combiners and id checks, the sparse
// embedding backward and the fused backward + sparse optimizer update.
//
// Backward design: sort-based segment reduction, not atomics.
//  1. every id of every input becomes a key (its table row; ids that are out
//     of range, or outside the lists, get the sentinel key table_rows) with
//     its global entry number as value; the entry's batch row and combiner
//     scale are computed once here;
//  2. a stable radix sort over only the bits the table needs groups equal
//     rows, keeping entries in their original order inside a group;
//  3. run-length encoding gives the unique rows and their run lengths, an
//     exclusive scan the start of each run;
//  4. hot rows (ids repeated more than kPiece times in the batch, common with
//     Zipf-distributed ids) are split into pieces of kPiece entries, each
//     summed by its own warp into a scratch row;
//  5. one warp per unique row sums its entries (or its pieces, in order) in
//     registers and writes the row of the sparse gradient - or, fused,
//     applies the optimizer to that row of the table and its moments.
// Why not atomics into a scratch keyed by a sorted unique list: that needs
// the same sort to build the list, then a second pass, and float atomics make
// the sums depend on scheduling. Here every sum has a fixed order (batch
// order, by pieces for hot rows), so results are deterministic and match the
// CPU device to rounding; every gradient row is written once with whole-row
// coalesced accesses, which is what bounds the fused update on a large table
// (three table-sized arrays touched only on the rows of the batch), and no
// warp sums more than kPiece entries or pieces of one row.
#include <cub/cub.cuh>

#include "internal.cuh"

__device__ __forceinline__ float comb_scale(int comb, int64_t n) {
	if (n == 0) return 0.0f;
	if (comb == MTL_COMB_MEAN) return 1.0f / (float)n;
	if (comb == MTL_COMB_SQRTN) return (float)(1.0 / sqrt((double)n));
	return 1.0f;
}

__device__ __forceinline__ void record_bad_id(mtlcuda_idcheck_slot *s, int64_t pos, int64_t row, int id,
                                              int64_t table_rows) {
	unsigned long long key = ((unsigned long long)pos << 32) | (unsigned int)id;
	atomicMin(&s->key, key);
	atomicMin(&s->row, (unsigned long long)row);
	atomicMin(&s->rows, (unsigned long long)table_rows);
}

// ---- gather ----

// Thread per output element (b, j): consecutive threads read consecutive
// columns of one table row.
__global__ void k_gather(float *out, int out_cols, int col, const float *table, int64_t table_rows, int dim,
                         const int *ids, int64_t batch, mtlcuda_idcheck_slot *slot) {
	int64_t total = batch * dim;
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)blockDim.x * gridDim.x) {
		int64_t b = k / dim;
		int j = (int)(k - b * dim);
		int id = ids[b];
		float v = 0.0f;
		if (id >= 0 && id < table_rows) {
			v = table[(int64_t)id * dim + j];
		} else if (j == 0) {
			record_bad_id(slot, b, b, id, table_rows);
		}
		out[b * out_cols + col + j] = v;
	}
}

__global__ void k_gather_list(float *out, int out_cols, int col, const float *table, int64_t table_rows, int dim,
                              const int *ids, int64_t num_ids, const int *offsets, int64_t batch, int comb,
                              mtlcuda_idcheck_slot *slot) {
	int64_t total = batch * dim;
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)blockDim.x * gridDim.x) {
		int64_t b = k / dim;
		int j = (int)(k - b * dim);
		int64_t s = offsets[b], e = offsets[b + 1];
		float acc = 0.0f;
		if (s < 0 || e < s || e > num_ids) {
			if (j == 0) atomicMin(&slot->bad_offsets, (unsigned long long)b);
		} else {
			for (int64_t p = s; p < e; p++) {
				int id = ids[p];
				if (id >= 0 && id < table_rows) {
					acc += table[(int64_t)id * dim + j];
				} else if (j == 0) {
					record_bad_id(slot, p, b, id, table_rows);
				}
			}
			acc *= comb_scale(comb, e - s);
		}
		out[b * out_cols + col + j] = acc;
	}
}

extern "C" int mtlcuda_embedding_gather(mtlcuda_ctx *ctx, mtlcuda_dptr out, int out_cols, int col, mtlcuda_dptr table,
                                    int64_t table_rows, int dim, mtlcuda_dptr ids, int64_t num_ids, mtlcuda_dptr offsets,
                                    int64_t batch, int comb, int slot) {
	MTL_REQUIRE(ctx, batch >= 0 && dim >= 0 && col >= 0 && col + dim <= out_cols,
	            "embedding_gather: %d columns at column %d of a %d-column output", dim, col, out_cols);
	MTL_REQUIRE(ctx, comb >= MTL_COMB_MEAN && comb <= MTL_COMB_SQRTN, "embedding_gather: unknown combiner %d", comb);
	MTL_REQUIRE(ctx, table_rows >= 0 && table_rows <= 0x7fffffff, "embedding_gather: %lld table rows",
	            (long long)table_rows);
	if (batch == 0 || dim == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (slot < 0) slot = 0;
	if (slot >= MTL_IDCHECK_SLOTS) slot = MTL_IDCHECK_SLOTS - 1;
	mtlcuda_idcheck_slot *s = ctx->idcheck + slot;
	unsigned grid = mtlcuda_grid(ctx, batch * dim, 2);
	if (offsets == 0) {
		MTL_REQUIRE(ctx, num_ids >= batch, "embedding_gather: %lld ids for %lld rows", (long long)num_ids,
		            (long long)batch);
		MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_gather)(dptr<float>(out), out_cols, col, dptr<const float>(table),
		                                              table_rows, dim, dptr<const int>(ids), batch, s);
	} else {
		MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_gather_list)(dptr<float>(out), out_cols, col, dptr<const float>(table),
		                                                   table_rows, dim, dptr<const int>(ids), num_ids,
		                                                   dptr<const int>(offsets), batch, comb, s);
	}
	MTL_LAUNCHED(ctx, "embedding_gather");
	return MTL_OK;
}

extern "C" int mtlcuda_idcheck_fetch(mtlcuda_ctx *ctx, int slots, int *found, int *slot, int64_t *pos, int64_t *row,
                                 int64_t *id, int64_t *table_rows) {
	*found = 0;
	*slot = -1;
	*pos = *row = *id = *table_rows = -1;
	if (slots <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (ctx->capturing) return mtlcuda_fail(ctx, MTL_ERR_CAPTURE, "id check read-back while capturing a graph");
	if (slots > MTL_IDCHECK_SLOTS) slots = MTL_IDCHECK_SLOTS;
	size_t bytes = sizeof(mtlcuda_idcheck_slot) * (size_t)slots;
	mtlcuda_idcheck_slot *host = static_cast<mtlcuda_idcheck_slot *>(ctx->host_small);
	MTL_CUDA(ctx, cudaMemcpyAsync(host, ctx->idcheck, bytes, cudaMemcpyDeviceToHost, ctx->compute));
	MTL_CUDA(ctx, cudaMemsetAsync(ctx->idcheck, 0xFF, bytes, ctx->compute));
	MTL_CUDA(ctx, cudaStreamSynchronize(ctx->compute));
	const unsigned long long clean = ~0ull;
	for (int i = 0; i < slots; i++) {
		if (host[i].key != clean) {
			*found = 1;
			*slot = i;
			*pos = (int64_t)(host[i].key >> 32);
			*id = (int64_t)(int)(unsigned int)(host[i].key & 0xffffffffull);
			*row = (int64_t)host[i].row;
			*table_rows = (int64_t)host[i].rows;
			return MTL_OK;
		}
		if (host[i].bad_offsets != clean) {
			*found = 2;
			*slot = i;
			*row = (int64_t)host[i].bad_offsets;
			return MTL_OK;
		}
	}
	return MTL_OK;
}

// ---- backward ----

struct emb_inputs {
	mtlcuda_emb_input in[MTL_MAX_EMB_INPUTS];
	int64_t base[MTL_MAX_EMB_INPUTS + 1]; // global entry number of each input's first id
	int count;
};

__device__ __forceinline__ int input_of(const emb_inputs &a, int64_t g) {
	int i = 0;
	while (i + 1 < a.count && a.base[i + 1] <= g) i++;
	return i;
}

// Entries of one hot-row piece; rows with more entries are split.
constexpr int kPiece = 128;

// Step 1. Key = table row of entry g, or the sentinel table_rows when the
// entry does not contribute (id out of range, position outside the lists:
// the gather reported those). Also the entry's batch row and combiner scale.
__global__ void k_build_keys(emb_inputs a, int64_t total, int64_t table_rows, unsigned *keys, int *vals,
                             int *entry_row, float *entry_scale) {
	for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += (int64_t)blockDim.x * gridDim.x) {
		int i = input_of(a, g);
		const mtlcuda_emb_input &in = a.in[i];
		int64_t j = g - a.base[i];
		const int *offs = dptr<const int>(in.offsets);
		bool inside = offs ? (j >= offs[0] && j < offs[in.batch]) : j < in.batch;
		int id = dptr<const int>(in.ids)[j];
		bool ok = inside && id >= 0 && id < table_rows;
		int64_t b = j;
		float scale = 1.0f;
		if (ok && offs) {
			// Largest b with offs[b] <= j: the row whose list holds entry j
			// (an empty row shares its offset with the next row).
			int64_t lo = 0, hi = in.batch; // offs[lo] <= j < offs[hi]
			while (hi - lo > 1) {
				int64_t mid = (lo + hi) >> 1;
				if (offs[mid] <= j)
					lo = mid;
				else
					hi = mid;
			}
			b = lo;
			scale = comb_scale(in.comb, (int64_t)offs[b + 1] - offs[b]);
		}
		keys[g] = ok ? (unsigned)id : (unsigned)table_rows;
		vals[g] = (int)g;
		entry_row[g] = (int)b;
		entry_scale[g] = scale;
	}
}

// After step 3: drops the sentinel run (always the last: it is the largest
// key) into runs[1], and counts the pieces of hot rows.
__global__ void k_valid_runs(int *runs, const unsigned *uniq, int64_t table_rows) {
	int n = runs[0];
	if (n > 0 && uniq[n - 1] == (unsigned)table_rows) n--;
	runs[1] = n;
}

__global__ void k_piece_counts(const int *runs, const int *counts, int64_t total, int *pieces) {
	const int n = runs[1];
	for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)blockDim.x * gridDim.x) {
		int cnt = u < n ? counts[u] : 0;
		pieces[u] = cnt > kPiece ? (cnt + kPiece - 1) / kPiece : 0;
	}
}

// runs[2] = total number of pieces (after the scan of the piece counts).
__global__ void k_piece_total(int *runs, const int *pieces, const int *piece_start) {
	int n = runs[1];
	runs[2] = n > 0 ? piece_start[n - 1] + pieces[n - 1] : 0;
}

// Columns per lane held in registers: a warp covers 32*kVec columns per pass.
constexpr int kVec = 4;

struct seg_arrays {
	const unsigned *uniq;
	const int *counts, *starts, *sorted_vals, *entry_row, *pieces, *piece_start, *runs;
	const float *entry_scale;
	float *partial; // [pieces, dim]
};

// acc[v] += contribution of sorted entries [from, to) to columns
// c0 + v*32 + lane, in entry order; four entries are loaded at a time so
// that their memory accesses overlap.
__device__ __forceinline__ void sum_entries(const emb_inputs &a, const seg_arrays &s, int from, int to, int dim,
                                            int c0, int lane, float (&acc)[kVec]) {
	int e = from;
	for (; e + 4 <= to; e += 4) {
		const float *row[4];
		float sc[4];
#pragma unroll
		for (int q = 0; q < 4; q++) {
			int g = s.sorted_vals[e + q];
			const mtlcuda_emb_input &in = a.in[input_of(a, g)];
			row[q] = dptr<const float>(in.dout) + (int64_t)s.entry_row[g] * in.dout_cols + in.col;
			sc[q] = s.entry_scale[g];
		}
#pragma unroll
		for (int v = 0; v < kVec; v++) {
			int c = c0 + v * 32 + lane;
			if (c >= dim) continue;
			float x0 = row[0][c], x1 = row[1][c], x2 = row[2][c], x3 = row[3][c];
			acc[v] += sc[0] * x0;
			acc[v] += sc[1] * x1;
			acc[v] += sc[2] * x2;
			acc[v] += sc[3] * x3;
		}
	}
	for (; e < to; e++) {
		int g = s.sorted_vals[e];
		const mtlcuda_emb_input &in = a.in[input_of(a, g)];
		const float *row = dptr<const float>(in.dout) + (int64_t)s.entry_row[g] * in.dout_cols + in.col;
		float sc = s.entry_scale[g];
#pragma unroll
		for (int v = 0; v < kVec; v++) {
			int c = c0 + v * 32 + lane;
			if (c < dim) acc[v] += sc * row[c];
		}
	}
}

// Step 4: one warp per piece of a hot row writes the piece's sum.
__global__ void __launch_bounds__(kThreads) k_pieces(emb_inputs a, seg_arrays s, int64_t max_pieces, int dim) {
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	const int n = s.runs[1];
	const int64_t npieces = s.runs[2] < max_pieces ? s.runs[2] : max_pieces;
	for (int64_t p = warp; p < npieces; p += warps) {
		// The row of piece p: the last u with piece_start[u] <= p (rows
		// without pieces share their start with the next row).
		int lo = 0, hi = n; // piece_start[lo] <= p < piece_start[hi] (hi = n: end)
		while (hi - lo > 1) {
			int mid = (lo + hi) >> 1;
			if (s.piece_start[mid] <= p)
				lo = mid;
			else
				hi = mid;
		}
		int u = lo;
		int k = (int)(p - s.piece_start[u]);
		int from = s.starts[u] + k * kPiece;
		int end = s.starts[u] + s.counts[u];
		int to = from + kPiece < end ? from + kPiece : end;
		for (int c0 = 0; c0 < dim; c0 += 32 * kVec) {
			float acc[kVec] = {};
			sum_entries(a, s, from, to, dim, c0, lane, acc);
#pragma unroll
			for (int v = 0; v < kVec; v++) {
				int c = c0 + v * 32 + lane;
				if (c < dim) s.partial[p * dim + c] = acc[v];
			}
		}
	}
}

// Step 5: one warp per unique row u. MODE 0: write the sparse gradient (rows
// and values), and with pad != 0 mark rows past the count with -1 and zero
// values. MODE 1: apply the optimizer to the table row in place.
template <int MODE>
__global__ void __launch_bounds__(kThreads)
    k_segments(emb_inputs a, seg_arrays s, int64_t total, int64_t capacity, int dim, int *out_rows, float *out_values,
               int pad, float *table, float *s1, float *s2, mtlcuda_sparse_opt opt, const mtlcuda_step_params *sp) {
	if (MODE == 1 && sp) opt.lr = opt.kind == MTL_OPT_ADAM ? sp->lr_t : sp->lr;
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	const int n = s.runs[1];
	int64_t limit = MODE == 0 && pad ? total : n;
	if (MODE == 0 && limit > capacity) limit = capacity;
	for (int64_t u = warp; u < limit; u += warps) {
		if (u >= n) { // padding (MODE 0 only)
			if (lane == 0) out_rows[u] = -1;
			for (int c = lane; c < dim; c += 32) out_values[u * dim + c] = 0.0f;
			continue;
		}
		const unsigned r = s.uniq[u];
		const int np = s.pieces[u];
		if (MODE == 0 && lane == 0) out_rows[u] = (int)r;
		for (int c0 = 0; c0 < dim; c0 += 32 * kVec) {
			float acc[kVec] = {};
			if (np == 0) {
				sum_entries(a, s, s.starts[u], s.starts[u] + s.counts[u], dim, c0, lane, acc);
			} else {
				const float *part = s.partial + (int64_t)s.piece_start[u] * dim;
				for (int k = 0; k < np; k++) {
#pragma unroll
					for (int v = 0; v < kVec; v++) {
						int c = c0 + v * 32 + lane;
						if (c < dim) acc[v] += part[(int64_t)k * dim + c];
					}
				}
			}
#pragma unroll
			for (int v = 0; v < kVec; v++) {
				int c = c0 + v * 32 + lane;
				if (c >= dim) continue;
				if (MODE == 0) {
					out_values[u * dim + c] = acc[v];
					continue;
				}
				int64_t at = (int64_t)r * dim + c;
				float p = table[at];
				float g = acc[v] + 2.0f * opt.l2 * p;
				if (opt.kind == MTL_OPT_ADAM) {
					float m = opt.beta1 * s1[at] + (1.0f - opt.beta1) * g;
					float w = opt.beta2 * s2[at] + (1.0f - opt.beta2) * g * g;
					s1[at] = m;
					s2[at] = w;
					table[at] = p - opt.lr * m / (sqrtf(w) + opt.eps);
				} else if (opt.kind == MTL_OPT_ADAGRAD) {
					float acc2 = s1[at] + g * g;
					s1[at] = acc2;
					table[at] = p - opt.lr * g / (sqrtf(acc2) + opt.eps);
				} else {
					table[at] = p - opt.lr * g;
				}
			}
		}
	}
}

static size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

// Hot-row pieces of a batch of `total` entries: a row with c > kPiece
// entries has ceil(c/kPiece) < 2c/kPiece pieces, so 2*total/kPiece + 1 bounds
// the sum.
static int64_t max_pieces(int64_t total) { return 2 * total / kPiece + 1; }

// Steps 1-4 (see the top of the file), queued on the compute stream; s gets
// the arrays step 5 reads.
static int build_segments(mtlcuda_ctx *ctx, const emb_inputs &a, int64_t total, int64_t table_rows, int dim,
                          seg_arrays *s) {
	int n = (int)total;
	int end_bit = 1;
	while (end_bit < 32 && ((int64_t)1 << end_bit) <= table_rows) end_bit++; // keys in [0, table_rows]
	size_t sort_bytes = 0, rle_bytes = 0, scan_bytes = 0;
	MTL_CUDA(ctx, cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (unsigned *)nullptr, (unsigned *)nullptr,
	                                              (int *)nullptr, (int *)nullptr, n, 0, end_bit, ctx->compute));
	MTL_CUDA(ctx, cub::DeviceRunLengthEncode::Encode(nullptr, rle_bytes, (unsigned *)nullptr, (unsigned *)nullptr,
	                                                 (int *)nullptr, (int *)nullptr, n, ctx->compute));
	MTL_CUDA(ctx, cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, (int *)nullptr, (int *)nullptr, n, ctx->compute));
	size_t temp = sort_bytes > rle_bytes ? sort_bytes : rle_bytes;
	if (scan_bytes > temp) temp = scan_bytes;
	const size_t arr = align_up((size_t)n * 4);
	const int64_t mp = max_pieces(total);
	const size_t partial_bytes = align_up((size_t)mp * (size_t)dim * 4);
	const size_t need = 11 * arr + align_up(4 * sizeof(int)) + partial_bytes + align_up(temp);
	int rc = mtlcuda_scratch_reserve(ctx, need);
	if (rc != MTL_OK) return rc;
	char *p = ctx->scratch;
	auto take = [&p](size_t bytes) {
		char *q = p;
		p += bytes;
		return q;
	};
	unsigned *keys_in = (unsigned *)take(arr), *keys_out = (unsigned *)take(arr), *uniq = (unsigned *)take(arr);
	int *vals_in = (int *)take(arr), *vals_out = (int *)take(arr), *counts = (int *)take(arr);
	int *starts = (int *)take(arr), *entry_row = (int *)take(arr), *pieces = (int *)take(arr);
	int *piece_start = (int *)take(arr);
	float *entry_scale = (float *)take(arr);
	int *runs = (int *)take(align_up(4 * sizeof(int)));
	float *partial = (float *)take(partial_bytes);
	void *tmp = take(align_up(temp));

	const unsigned grid = mtlcuda_grid(ctx, total, 2);
	MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_build_keys)(a, total, table_rows, keys_in, vals_in, entry_row, entry_scale);
	MTL_LAUNCHED(ctx, "embedding_build_keys");
	size_t tb = temp;
	MTL_CUDA(ctx, cub::DeviceRadixSort::SortPairs(tmp, tb, keys_in, keys_out, vals_in, vals_out, n, 0, end_bit,
	                                              ctx->compute));
	// Counts past the run count stay zero so that the scan reads no garbage.
	MTL_CUDA(ctx, cudaMemsetAsync(counts, 0, (size_t)n * 4, ctx->compute));
	tb = temp;
	MTL_CUDA(ctx, cub::DeviceRunLengthEncode::Encode(tmp, tb, keys_out, uniq, counts, runs, n, ctx->compute));
	tb = temp;
	MTL_CUDA(ctx, cub::DeviceScan::ExclusiveSum(tmp, tb, counts, starts, n, ctx->compute));
	MTL_LAUNCH(1, 1, 0, ctx->compute, k_valid_runs)(runs, uniq, table_rows);
	MTL_LAUNCHED(ctx, "embedding_valid_runs");
	MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_piece_counts)(runs, counts, total, pieces);
	MTL_LAUNCHED(ctx, "embedding_piece_counts");
	tb = temp;
	MTL_CUDA(ctx, cub::DeviceScan::ExclusiveSum(tmp, tb, pieces, piece_start, n, ctx->compute));
	MTL_LAUNCH(1, 1, 0, ctx->compute, k_piece_total)(runs, pieces, piece_start);
	MTL_LAUNCHED(ctx, "embedding_piece_total");

	*s = seg_arrays{uniq, counts, starts, vals_out, entry_row, pieces, piece_start, runs, entry_scale, partial};
	if (dim > 0) {
		MTL_LAUNCH(mtlcuda_grid(ctx, mp * 32), kThreads, 0, ctx->compute, k_pieces)(a, *s, mp, dim);
		MTL_LAUNCHED(ctx, "embedding_pieces");
	}
	return MTL_OK;
}

static int pack_inputs(mtlcuda_ctx *ctx, const char *name, const mtlcuda_emb_input *inputs, int num_inputs, int64_t table_rows,
                       int dim, emb_inputs *a, int64_t *total) {
	MTL_REQUIRE(ctx, num_inputs >= 1 && num_inputs <= MTL_MAX_EMB_INPUTS, "%s: %d inputs (1 to %d allowed)", name,
	            num_inputs, MTL_MAX_EMB_INPUTS);
	MTL_REQUIRE(ctx, table_rows >= 1 && table_rows < 0x7fffffff, "%s: %lld table rows", name, (long long)table_rows);
	MTL_REQUIRE(ctx, dim >= 0, "%s: negative dim", name);
	*a = emb_inputs{};
	int64_t t = 0;
	for (int i = 0; i < num_inputs; i++) {
		const mtlcuda_emb_input &in = inputs[i];
		MTL_REQUIRE(ctx, in.num_ids >= 0 && in.batch >= 0 && in.col >= 0 && in.col + dim <= in.dout_cols,
		            "%s: input %d: %lld ids, %lld rows, %d columns at column %d of %d", name, i, (long long)in.num_ids,
		            (long long)in.batch, dim, in.col, in.dout_cols);
		MTL_REQUIRE(ctx, in.comb >= MTL_COMB_MEAN && in.comb <= MTL_COMB_SQRTN, "%s: input %d: unknown combiner %d",
		            name, i, in.comb);
		MTL_REQUIRE(ctx, in.offsets || in.num_ids >= in.batch, "%s: input %d: %lld ids for %lld rows", name, i,
		            (long long)in.num_ids, (long long)in.batch);
		a->in[i] = in;
		a->base[i] = t;
		t += in.num_ids;
	}
	a->base[num_inputs] = t;
	a->count = num_inputs;
	MTL_REQUIRE(ctx, t < 0x7fffffff, "%s: %lld ids exceed the 2^31 limit of one call", name, (long long)t);
	*total = t;
	return MTL_OK;
}

extern "C" int mtlcuda_embedding_backward(mtlcuda_ctx *ctx, mtlcuda_dptr out_rows, mtlcuda_dptr out_values, int64_t capacity,
                                      int64_t table_rows, int dim, const mtlcuda_emb_input *inputs, int num_inputs,
                                      int64_t *n_unique) {
	MTL_REQUIRE(ctx, capacity >= 0, "embedding_backward: negative capacity");
	emb_inputs a;
	int64_t total = 0;
	int rc = pack_inputs(ctx, "embedding_backward", inputs, num_inputs, table_rows, dim, &a, &total);
	if (rc != MTL_OK) return rc;
	if (n_unique) *n_unique = 0;
	if (total == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (n_unique && ctx->capturing)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "embedding_backward cannot read the unique-row count while capturing a graph");
	seg_arrays sa;
	rc = build_segments(ctx, a, total, table_rows, dim, &sa);
	if (rc != MTL_OK) return rc;
	int pad = n_unique ? 0 : 1;
	unsigned grid = mtlcuda_grid(ctx, total * 32);
	MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_segments<0>)(a, sa, total, capacity, dim, dptr<int>(out_rows),
	                                                   dptr<float>(out_values), pad, nullptr, nullptr, nullptr,
	                                                   mtlcuda_sparse_opt{}, nullptr);
	MTL_LAUNCHED(ctx, "embedding_backward");
	if (n_unique) {
		int *host = static_cast<int *>(ctx->host_small);
		MTL_CUDA(ctx, cudaMemcpyAsync(host, sa.runs + 1, sizeof(int), cudaMemcpyDeviceToHost, ctx->compute));
		MTL_CUDA(ctx, cudaStreamSynchronize(ctx->compute));
		*n_unique = host[0];
	}
	return MTL_OK;
}

static int embedding_update(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows, int dim,
                            const mtlcuda_emb_input *inputs, int num_inputs, const mtlcuda_sparse_opt *opt, mtlcuda_dptr sp) {
	emb_inputs a;
	int64_t total = 0;
	int rc = pack_inputs(ctx, "embedding_update", inputs, num_inputs, table_rows, dim, &a, &total);
	if (rc != MTL_OK) return rc;
	MTL_REQUIRE(ctx, opt->kind >= MTL_OPT_SGD && opt->kind <= MTL_OPT_ADAM, "embedding_update: unknown optimizer %d",
	            opt->kind);
	MTL_REQUIRE(ctx, opt->kind == MTL_OPT_SGD || s1, "embedding_update: missing optimizer state");
	MTL_REQUIRE(ctx, opt->kind != MTL_OPT_ADAM || s2, "embedding_update: missing second Adam moment");
	if (total == 0 || dim == 0) return MTL_OK;
	MTL_ENTER(ctx);
	seg_arrays sa;
	rc = build_segments(ctx, a, total, table_rows, dim, &sa);
	if (rc != MTL_OK) return rc;
	unsigned grid = mtlcuda_grid(ctx, total * 32);
	MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_segments<1>)(a, sa, total, total, dim, nullptr, nullptr, 0, dptr<float>(table),
	                                                   dptr<float>(s1), dptr<float>(s2), *opt,
	                                                   dptr<const mtlcuda_step_params>(sp));
	MTL_LAUNCHED(ctx, "embedding_update");
	return MTL_OK;
}

extern "C" int mtlcuda_embedding_update(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows,
                                    int dim, const mtlcuda_emb_input *inputs, int num_inputs, const mtlcuda_sparse_opt *opt) {
	return embedding_update(ctx, table, s1, s2, table_rows, dim, inputs, num_inputs, opt, 0);
}

extern "C" int mtlcuda_embedding_update_sp(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows,
                                       int dim, const mtlcuda_emb_input *inputs, int num_inputs,
                                       const mtlcuda_sparse_opt *opt, mtlcuda_dptr sp) {
	MTL_REQUIRE(ctx, sp != 0, "embedding_update_sp: no step parameters");
	return embedding_update(ctx, table, s1, s2, table_rows, dim, inputs, num_inputs, opt, sp);
}
