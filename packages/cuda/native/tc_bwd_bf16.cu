// Tensor-core backward kernels for __nv_bfloat16 (see tc_bwd.cuh).
#include "tc_bwd.cuh"
FA_INSTANTIATE_TC_BWD(__nv_bfloat16, bf16)
