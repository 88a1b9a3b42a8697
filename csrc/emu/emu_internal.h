// emu_internal.h - what the parts of the emulated runtime share.
#ifndef MTLEMU_INTERNAL_H
#define MTLEMU_INTERNAL_H
#include <functional>

#include "mtlemu.h"

namespace mtlemu {
// Queues a device operation on s (the default stream for nullptr), or
// records it into the graph while s is being captured.
cudaError_t submit(cudaStream_t s, const char *name, std::function<void()> fn);
// Whether [p, p+n) lies inside one live device allocation.
bool device_range(const void *p, size_t n);
// The run's scheduling seed.
uint64_t seed();
} // namespace mtlemu
#endif
