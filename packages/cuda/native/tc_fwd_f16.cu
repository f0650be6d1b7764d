// Tensor-core forward kernels for __half (see tc_fwd.cuh).
#include "tc_fwd.cuh"
FA_INSTANTIATE_TC_FWD(__half, f16)
