// Tensor-core forward and decode kernels for __nv_bfloat16 (see tc_fwd.cuh, tc_decode.cuh).
#include "tc_decode.cuh"
#include "tc_fwd.cuh"
FA_INSTANTIATE_TC_FWD(__nv_bfloat16, bf16)
FA_INSTANTIATE_TC_DECODE(__nv_bfloat16, bf16)
