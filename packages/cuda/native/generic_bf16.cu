// Generic kernels for __nv_bfloat16 inputs (see generic.cuh).
#include "generic.cuh"
FA_INSTANTIATE_GENERIC(__nv_bfloat16, bf16)
