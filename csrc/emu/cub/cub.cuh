// cub/cub.cuh of the emulated device: the device-wide algorithms libmtlcuda
// uses, with CUB's two-phase temporary-storage protocol (a call with
// d_temp_storage == nullptr only writes the size it needs), run in stream
// order on the host (runtime.cpp).
#ifndef MTLEMU_CUB_CUH
#define MTLEMU_CUB_CUH
#include "mtlemu.h"

namespace mtlemu {
// Enqueues op on s (or records it in the stream's capture) after checking
// the temporary storage; what the CUB functions below share.
cudaError_t cub_call(const char *name, void *temp, size_t &temp_bytes, size_t need, cudaStream_t s,
                     std::function<void()> op);
void cub_sort_pairs_u32_i32(const unsigned *kin, unsigned *kout, const int *vin, int *vout, int n, int begin_bit,
                            int end_bit);
void cub_rle_u32(const unsigned *in, unsigned *uniq, int *counts, int *runs, int n);
void cub_exclusive_sum_i32(const int *in, int *out, int n);
} // namespace mtlemu

namespace cub {
struct DeviceRadixSort {
	static cudaError_t SortPairs(void *temp, size_t &temp_bytes, const unsigned *kin, unsigned *kout, const int *vin,
	                             int *vout, int n, int begin_bit = 0, int end_bit = 32, cudaStream_t s = nullptr) {
		return mtlemu::cub_call("cub::DeviceRadixSort::SortPairs", temp, temp_bytes, 1024 + (size_t)n * 8, s,
		                        [=]() { mtlemu::cub_sort_pairs_u32_i32(kin, kout, vin, vout, n, begin_bit, end_bit); });
	}
};
struct DeviceRunLengthEncode {
	static cudaError_t Encode(void *temp, size_t &temp_bytes, const unsigned *in, unsigned *uniq, int *counts,
	                          int *runs, int n, cudaStream_t s = nullptr) {
		return mtlemu::cub_call("cub::DeviceRunLengthEncode::Encode", temp, temp_bytes, 512 + (size_t)n / 8, s,
		                        [=]() { mtlemu::cub_rle_u32(in, uniq, counts, runs, n); });
	}
};
struct DeviceScan {
	static cudaError_t ExclusiveSum(void *temp, size_t &temp_bytes, const int *in, int *out, int n,
	                                cudaStream_t s = nullptr) {
		return mtlemu::cub_call("cub::DeviceScan::ExclusiveSum", temp, temp_bytes, 256 + (size_t)n / 16, s,
		                        [=]() { mtlemu::cub_exclusive_sum_i32(in, out, n); });
	}
};
} // namespace cub
#endif
