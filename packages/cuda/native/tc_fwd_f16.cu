// Tensor-core forward and decode kernels for __half (see tc_fwd.cuh, tc_decode.cuh).
#include "tc_decode.cuh"
#include "tc_fwd.cuh"
FA_INSTANTIATE_TC_FWD(__half, f16)
FA_INSTANTIATE_TC_DECODE(__half, f16)
