// Generic kernels for __half inputs (see generic.cuh).
#include "generic.cuh"
FA_INSTANTIATE_GENERIC(__half, f16)
