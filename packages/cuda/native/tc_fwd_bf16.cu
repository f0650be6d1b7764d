// Tensor-core forward kernels for __nv_bfloat16 (see tc_fwd.cuh).
#include "tc_fwd.cuh"
FA_INSTANTIATE_TC_FWD(__nv_bfloat16, bf16)
