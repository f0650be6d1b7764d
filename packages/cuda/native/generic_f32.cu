// Generic kernels for float inputs (see generic.cuh).
#include "generic.cuh"
FA_INSTANTIATE_GENERIC(float, f32)
