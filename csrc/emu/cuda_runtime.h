// cuda_runtime.h of the emulated device: see mtlemu.h.
#include "mtlemu.h"
